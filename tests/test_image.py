"""The image's two targets: ``light`` (no browser) serves every role that never opens one.

No Docker engine is needed: the Dockerfile's stages are read as text, and the
light roles are loaded in a Python that cannot import the browser stack.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROWSER_STACK = ("playwright", "trafilatura")  # requirements/archiver.txt, beyond base.txt


def stages() -> dict[str, tuple[str, str]]:
    """Stage name -> (the stage it builds on, its instructions)."""
    text = (ROOT / "Dockerfile").read_text()
    found = re.findall(r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)", text, re.M | re.S)
    return {name: (base, body) for base, name, body in found}


def chain(name: str) -> str:
    """Every instruction a target runs, from its first stage on."""
    known = stages()
    body = ""
    while name in known:
        name, own = known[name]
        body = own + body
    return body


def test_the_light_target_has_no_browser_node_or_playwright_and_the_default_has_them():
    assert list(stages())[-1] == "browser"  # a plain `docker build` gives the image every role can run
    light, browser = chain("light"), chain("browser")
    for tool in ("chromium", "node", "monolith", "all-in-one.txt"):
        assert tool not in light.lower(), tool
        assert tool in browser.lower(), tool
    assert "requirements/base.txt" in light


def test_the_light_roles_never_import_the_browser_stack(tmp_path):
    """The API, the summarizer, the dead-letter handler, housekeeping and the migration load, and
    build what they run, in a Python where the browser stack does not exist."""
    script = f"""
import sys

class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BROWSER_STACK!r}:
            raise ImportError(f"{{name}} is not in the light image")

sys.meta_path.insert(0, Absent())
import functions.main, service.cli, emulators.bootstrap, infra.db, infra.replica
from service.api import ApiService
functions.main.runtime().summarizer.summarize("A sentence about the council. " * 30)
ApiService(functions.main.settings()).close()
print("light")
"""
    env = {
        "SERVICE_ROLE": "summarizer",
        "DATABASE_URL": "postgresql+pg8000://htbase@127.0.0.1:9/htbase",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
        "LOCAL_STORAGE_PATH": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "light", result.stderr
