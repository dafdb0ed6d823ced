"""SingleFile: the page after its scripts ran, saved as one self-contained HTML file.

The SingleFile CLI runs as a subprocess attached to the shared Chromium over its
DevTools endpoint (``--browser-server``), so it neither launches a browser nor
escapes the browser's egress proxy. It works in the capture's tab, in the
capture's own browser context: when SingleFile asks the endpoint for a new tab
(``/json/new``), a preload script hands it that one instead. So, like every
other capture, it starts with an empty cookie jar and storage, and the capture's
``PageWatch`` follows its load (size limit, refusals, HTTP errors) and stops
SingleFile as soon as that fails. Two things it does outside the browser are
fenced in here:

- resources the page itself could not fetch (cross-origin without CORS, say)
  are fetched again *from Node*. The preload sends those requests through the
  egress proxy too (undici's ProxyAgent), or refuses them where the npm
  package undici is missing: never straight to the network;
- that Node fetch also reads ``file://`` URLs from disk, which would put local
  files into an archive. Node's permission model lets the process read only
  its own code and write only its scratch directory, and its heap is capped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from pathlib import Path

from functions.archivers.base import Capture, CaptureTimeout, TransientCaptureError, check_size
from functions.archivers.browser import Browser, LoadedPage, PageArchiver
from htbase.logs import log

logger = logging.getLogger("htbase.singlefile")

ATTEMPTS = 3  # SingleFile sometimes exits 0 without writing anything ("Execution context not found")
MIN_ATTEMPT_S = 1.0  # don't start an attempt with less time than this left
NODE_HEAP_MB = 1024  # the page, its resources and their base64 copies, with room to spare

# Speed without losing fidelity: the load event (scripts that build the page on
# DOMContentLoaded/load have run by then) plus a short grace for late DOM
# updates, a short wait for lazy images, and no reload-with-a-weaker-condition.
SPEED_FLAGS = (
    "--browser-wait-until=load",
    "--browser-wait-until-delay=300",
    "--browser-wait-until-fallback=false",
    "--load-deferred-images-max-idle-time=500",
)

# Runs in the SingleFile process before its code (NODE_OPTIONS=--require).
# SingleFile's request for a new tab gets the capture's tab; its other DevTools
# calls (close the tab) go straight to Chromium on loopback. With an egress
# proxy, every other Node-side fetch goes through it (undici's ProxyAgent), or
# fails when undici is not installed.
PRELOAD = r"""
"use strict";
const devtools = new URL(process.env.HTBASE_DEVTOOLS_URL).origin;
const tab = process.env.HTBASE_TAB;
const DEVTOOLS_CALL = /^\/json\/(close|activate)(\/|$)/;
const directFetch = globalThis.fetch;
let guardedFetch = directFetch;
if (process.env.HTBASE_EGRESS_PROXY) {
  guardedFetch = () => Promise.reject(new TypeError("Node-side fetches are disabled: no egress proxy client"));
  if (process.env.HTBASE_UNDICI) {
    const { ProxyAgent } = require(process.env.HTBASE_UNDICI);
    const dispatcher = new ProxyAgent(process.env.HTBASE_EGRESS_PROXY);
    guardedFetch = (input, init) => directFetch(input, { ...init, dispatcher });
  }
}
globalThis.fetch = function (input, init = {}) {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (url.origin === devtools && url.pathname === "/json/new") {
    return Promise.resolve(new Response(tab, { headers: { "content-type": "application/json" } }));
  }
  if (url.origin === devtools && DEVTOOLS_CALL.test(url.pathname)) {
    return directFetch(input, init);
  }
  return guardedFetch(input, init);
};
"""


def _node_modules(singlefile_path: str) -> Path:
    """The node_modules directory SingleFile runs from (its code and dependencies)."""
    real = Path(singlefile_path).resolve()
    for parent in real.parents:
        if parent.name == "node_modules":
            return parent
    return real.parent


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


class SingleFileArchiver(PageArchiver):
    name = "singlefile"
    # The main document's answer in the tab first: a 404, a refusal or an oversized
    # page fails at once, before SingleFile (a second or more to start) loads it again.
    wait_until = "commit"
    # SingleFile loads the page again in the tab, with its own scripts injected first, and closes it.
    share_page = False

    def __init__(self, settings, browser: Browser):
        super().__init__(settings, browser)
        self.node_modules = _node_modules(settings.singlefile_path)
        self.undici = self.node_modules / "undici"
        if browser.proxy_url and not self.undici.is_dir():
            # Still safe, but resources only Node could fetch (cross-origin without CORS) are left out.
            log(
                logger,
                logging.WARNING,
                "npm package undici not found: SingleFile's Node-side fetches are disabled",
                node_modules=str(self.node_modules),
            )

    async def render(self, loaded: LoadedPage) -> Capture:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + loaded.timeout
        page, error = loaded.page, "no attempt made"
        for attempt in range(1, ATTEMPTS + 1):
            remaining = deadline - loop.time()
            if remaining < MIN_ATTEMPT_S:
                raise CaptureTimeout(f"timed out after {loaded.timeout:g}s loading {loaded.url}")
            if attempt > 1:
                page = await loaded.new_page()  # SingleFile closes the tab it was given
            result, error = await self._run(loaded, await loaded.devtools_target(page), remaining)
            if result is not None:
                return self._to_capture(loaded, result, attempt)
        raise TransientCaptureError(f"SingleFile wrote no page for {loaded.url} after {ATTEMPTS} attempts: {error}")

    async def _run(self, loaded: LoadedPage, tab: dict, budget: float) -> tuple[dict | None, str]:
        """One SingleFile run in ``tab``: its JSON result, or None and why there is none."""
        with tempfile.TemporaryDirectory(prefix="htbase-singlefile-") as scratch:
            output = Path(scratch) / "page.json"
            budget_ms = int(budget * 1000)
            command = [
                self.settings.singlefile_path,
                loaded.url,
                str(output),
                f"--browser-server={loaded.devtools_url}",
                "--output-json",
                "--filename-conflict-action=overwrite",
                # SingleFile's own limits fire before ours, so it closes its tab itself.
                f"--browser-load-max-time={int(budget_ms * 0.6)}",
                f"--browser-capture-max-time={int(budget_ms * 0.3)}",
                *SPEED_FLAGS,
            ]
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=self._env(scratch, loaded.devtools_url, tab),
                cwd=scratch,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            try:
                stdout, stderr = (out.decode("utf-8", "replace") for out in await proc.communicate())
            finally:
                if proc.returncode is None:  # the capture failed or ran out of time meanwhile
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
            if "Load timeout" in stderr or "Capture timeout" in stderr:
                raise CaptureTimeout(f"timed out after {loaded.timeout:g}s loading {loaded.url}")
            try:
                result = json.loads(output.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None, _last_line(stderr or stdout)
            if not result.get("content"):
                return None, "empty page"
            return result, ""

    def _env(self, scratch: str, devtools: str, tab: dict) -> dict[str, str]:
        """A minimal environment (no secrets of ours) with Node's permission model on."""
        preload = Path(scratch) / "preload.cjs"
        preload.write_text(PRELOAD, encoding="utf-8")
        node_options = [
            "--experimental-permission",
            f"--allow-fs-read={self.node_modules}/*",  # one path per flag: Node ignores lists here
            f"--allow-fs-read={scratch}/*",
            f"--allow-fs-write={scratch}/*",
            "--disable-warning=ExperimentalWarning",
            f"--max-old-space-size={NODE_HEAP_MB}",
            f"--require={preload}",
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": scratch,
            "HTBASE_DEVTOOLS_URL": devtools,
            "HTBASE_TAB": json.dumps(tab),
        }
        if self.browser.proxy_url:
            env["HTBASE_EGRESS_PROXY"] = self.browser.proxy_url
            if self.undici.is_dir():
                env["HTBASE_UNDICI"] = str(self.undici)
        # NODE_OPTIONS splits on spaces unless a value is double-quoted.
        quoted = (option.replace("\\", "\\\\").replace('"', '\\"') for option in node_options)
        env["NODE_OPTIONS"] = " ".join(f'"{option}"' for option in quoted)
        return env

    def _to_capture(self, loaded: LoadedPage, result: dict, attempts: int) -> Capture:
        # The watch judged every document the tab loaded; the archive is the last one.
        data = result["content"].encode("utf-8")
        check_size("page", len(data), self.settings.max_capture_bytes)
        metadata = {"title": result.get("title") or "", **loaded.document_metadata(), "attempts": attempts}
        return Capture(data, "text/html; charset=utf-8", "html", metadata)
