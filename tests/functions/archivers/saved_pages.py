"""What the archiver tests look into: the URLs a saved page would load, the PNGs it carries, and a
copy of the SingleFile CLI to inject faults into."""

from __future__ import annotations

import base64
import io
import re
import shutil
import stat
from pathlib import Path

from lxml import html as lxml_html
from PIL import Image

REAL_NODE_MODULES = Path(__file__).resolve().parents[3] / "node_modules"
CSS_URL = re.compile(r"url\(\s*['\"]?([^'\")]+)")

# Attributes through which an HTML document loads something (not links a reader follows).
RESOURCE_ATTRS = {
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "script": ("src",),
    "iframe": ("src",),
    "frame": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "track": ("src",),
    "input": ("src",),
    "image": ("href",),
}
NON_RESOURCE_LINKS = {"canonical", "alternate", "author", "license", "next", "prev", "search"}


def resource_urls(document: str) -> list[str]:
    """Every URL the saved page would load when opened: element attributes,
    stylesheet links, inline styles and <style> rules."""
    tree = lxml_html.fromstring(document)
    urls = []
    for element in tree.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        for attr in RESOURCE_ATTRS.get(tag, ()):
            value = element.get(attr)
            if value:
                urls += [part.split()[0] for part in value.split(",") if part.strip()] if attr == "srcset" else [value]
        if tag == "link" and element.get("href") and not NON_RESOURCE_LINKS & set((element.get("rel") or "").split()):
            urls.append(element.get("href"))
        if element.get("style"):
            urls += CSS_URL.findall(element.get("style"))
        if tag == "style":
            urls += CSS_URL.findall(element.text or "")
    return urls


def embedded_png_sizes(document: str) -> set[tuple[int, int]]:
    """The sizes of the PNG images carried inside the document as data: URIs."""
    return {
        Image.open(io.BytesIO(base64.b64decode(u.split(",", 1)[1]))).size
        for u in resource_urls(document)
        if u.startswith("data:image/png;base64,")
    }


def cli_copy(tmp_path: Path, wrapper: str | None = None, leave_out: tuple[str, ...] = ()) -> str:
    """A copy of the SingleFile install (minus ``leave_out`` packages) whose
    .bin/single-file is ``wrapper`` if given: a fault-injecting shell script in
    which REAL is the real CLI and MARKER a file it may create."""
    node_modules = tmp_path / "node_modules"
    shutil.copytree(
        REAL_NODE_MODULES,
        node_modules,
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d) == REAL_NODE_MODULES and n in leave_out],
    )
    cli = node_modules / ".bin" / "single-file"
    if wrapper is not None:
        cli.unlink()
        cli.write_text(
            wrapper.replace("REAL", str(node_modules / "single-file-cli" / "single-file-node.js")).replace(
                "MARKER", str(tmp_path / "ran-once")
            )
        )
        cli.chmod(cli.stat().st_mode | stat.S_IEXEC)
    return str(cli)
