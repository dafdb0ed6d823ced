"""The package layering holds: the kernel imports nothing, and only the composition root wires the rest.

    htbase (kernel: config, messages, logs, urls, topology)
      <- infra (adapters) <- functions (push handlers, captures, summaries)
                          <- api (the HTTP API)
      <- emulators (dev and test tooling)
    service (the composition root) may import all of them; nothing imports it.

Every import counts: module level, inside functions, and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from htbase.config import PROJECT_ROOT

ALLOWED: dict[str, set[str]] = {
    "htbase": set(),
    "infra": {"htbase"},
    "functions": {"htbase", "infra"},
    "api": {"htbase", "infra"},
    "emulators": {"htbase", "infra"},
    "service": {"htbase", "infra", "functions", "api"},
}


def imported_packages(source: str, package: str) -> set[str]:
    """The project packages a module imports (relative imports stay within its package)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [package] if node.level else [node.module or ""]
        else:
            continue
        found.update(name.split(".")[0] for name in names)
    return found & set(ALLOWED)


def violations(root: Path) -> list[str]:
    broken = []
    for package, allowed in ALLOWED.items():
        for path in sorted((root / package).rglob("*.py")):
            for imported in imported_packages(path.read_text(), package) - allowed - {package}:
                broken.append(f"{path.relative_to(root)} imports {imported}")
    return broken


def test_no_module_imports_against_the_layering():
    assert violations(PROJECT_ROOT) == []


@pytest.mark.parametrize(
    "package, line",
    [
        ("htbase", "from infra.ledger import Ledger"),
        ("infra", "import functions.worker"),
        ("api", "    from functions.archivers import build_archiver"),
        ("functions", "from service.api import ApiService"),
    ],
)
def test_a_back_edge_is_caught(tmp_path, package, line):
    for name in ALLOWED:
        (tmp_path / name).mkdir()
    source = f"def f():\n{line}\n" if line.startswith(" ") else line + "\n"
    (tmp_path / package / "bad.py").write_text(source)
    assert violations(tmp_path) == [f"{package}/bad.py imports {line.split()[1].split('.')[0]}"]
