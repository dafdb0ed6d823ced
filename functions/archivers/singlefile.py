"""SingleFile: the page after its scripts ran, saved as one self-contained HTML file.

The SingleFile CLI runs as a subprocess attached to the shared Chromium over its
DevTools endpoint (``--browser-server``), so it neither launches a browser nor
escapes the browser's egress proxy. Two things it does outside the browser are
fenced in here:

- resources the page itself could not fetch (cross-origin without CORS, say)
  are fetched again *from Node*. A preload script sends those requests through
  the egress proxy too (undici's ProxyAgent), or refuses them where the npm
  package undici is missing: never straight to the network;
- that Node fetch also reads ``file://`` URLs from disk, which would put local
  files into an archive. Node's permission model lets the process read only
  its own code and write only its scratch directory.

SingleFile opens its tab in Chromium's default context, so unlike the other
archivers its captures share cookies and storage with each other.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from functions.archivers.base import Capture, TransientCaptureError
from functions.archivers.base import capture_timeout, check_size
from functions.archivers.browser import Browser, check_response

log = logging.getLogger("htbase.singlefile")

ATTEMPTS = 3  # SingleFile sometimes exits 0 without writing anything ("Execution context not found")
MIN_ATTEMPT_S = 1.0  # don't start an attempt with less time than this left

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
# Every Node-side fetch goes through the egress proxy (undici's ProxyAgent), or
# fails when undici is not installed; only SingleFile's own DevTools calls (open
# and close its tab) go straight to Chromium on loopback.
PROXY_PRELOAD = r"""
"use strict";
const devtools = new URL(process.env.HTBASE_DEVTOOLS_URL).origin;
const DEVTOOLS_CALL = /^\/json\/(new|close|activate)(\/|$)/;
const directFetch = globalThis.fetch;
let guardedFetch = () => Promise.reject(new TypeError("Node-side fetches are disabled: no egress proxy client"));
if (process.env.HTBASE_UNDICI) {
  const { ProxyAgent } = require(process.env.HTBASE_UNDICI);
  const dispatcher = new ProxyAgent(process.env.HTBASE_EGRESS_PROXY);
  guardedFetch = (input, init) => directFetch(input, { ...init, dispatcher });
}
globalThis.fetch = function (input, init = {}) {
  const url = new URL(input instanceof Request ? input.url : String(input));
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


class SingleFileArchiver:
    name = "singlefile"

    def __init__(self, settings, browser: Browser):
        self.settings = settings
        self.browser = browser
        self.node_modules = _node_modules(settings.singlefile_path)
        self.undici = self.node_modules / "undici"
        if browser.proxy_url and not self.undici.is_dir():
            # Still safe, but resources only Node could fetch (cross-origin without CORS) are left out.
            log.warning("npm package undici not found in %s: SingleFile's Node-side fetches are disabled",
                        self.node_modules)

    def capture(self, url: str, options: dict[str, Any]) -> Capture:
        timeout = capture_timeout(self.settings, options)
        deadline = time.monotonic() + timeout
        # Probe the main document in the browser first: 4xx, refusals, oversized
        # pages and unreachable hosts fail fast, with the same messages as the
        # other archivers, instead of SingleFile archiving an error page.
        probe = self.browser.capture(url, lambda loaded: loaded.metadata(), timeout=timeout,
                                     max_bytes=self.settings.max_capture_bytes, settle=False)
        devtools = self.browser.devtools_url()
        error = "no attempt made"
        for attempt in range(1, ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_S:
                raise TransientCaptureError(f"timed out after {timeout:g}s loading {url}")
            result, error = self._run(url, devtools, remaining, timeout)
            if result is not None:
                return self._to_capture(url, result, probe, attempt)
        raise TransientCaptureError(f"SingleFile wrote no page for {url} after {ATTEMPTS} attempts: {error}")

    def _run(self, url: str, devtools: str, budget: float, timeout: float) -> tuple[dict | None, str]:
        """One SingleFile run: its JSON result, or None and why there is none."""
        with tempfile.TemporaryDirectory(prefix="htbase-singlefile-") as scratch:
            output = Path(scratch) / "page.json"
            budget_ms = int(budget * 1000)
            command = [
                self.settings.singlefile_path, url, str(output),
                f"--browser-server={devtools}", "--output-json", "--filename-conflict-action=overwrite",
                # SingleFile's own limits fire before ours, so it closes its tab itself.
                f"--browser-load-max-time={int(budget_ms * 0.6)}",
                f"--browser-capture-max-time={int(budget_ms * 0.3)}",
                *SPEED_FLAGS,
            ]
            proc = subprocess.Popen(command, env=self._env(scratch, devtools), cwd=scratch,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    start_new_session=True)
            try:
                stdout, stderr = proc.communicate(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise TransientCaptureError(f"timed out after {timeout:g}s loading {url}") from None
            if "Load timeout" in stderr or "Capture timeout" in stderr:
                raise TransientCaptureError(f"timed out after {timeout:g}s loading {url}")
            try:
                result = json.loads(output.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None, _last_line(stderr or stdout)
            if not result.get("content"):
                return None, "empty page"
            return result, ""

    def _env(self, scratch: str, devtools: str) -> dict[str, str]:
        """A minimal environment (no secrets of ours) with Node's permission model on."""
        node_options = [
            "--experimental-permission",
            f"--allow-fs-read={self.node_modules}/*",  # one path per flag: Node ignores lists here
            f"--allow-fs-read={scratch}/*",
            f"--allow-fs-write={scratch}/*",
            "--disable-warning=ExperimentalWarning",
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": scratch}
        if self.browser.proxy_url:
            preload = Path(scratch) / "egress.cjs"
            preload.write_text(PROXY_PRELOAD, encoding="utf-8")
            node_options.append(f"--require={preload}")
            env.update(HTBASE_DEVTOOLS_URL=devtools, HTBASE_EGRESS_PROXY=self.browser.proxy_url)
            if self.undici.is_dir():
                env["HTBASE_UNDICI"] = str(self.undici)
        # NODE_OPTIONS splits on spaces unless a value is double-quoted.
        env["NODE_OPTIONS"] = " ".join('"%s"' % o.replace("\\", "\\\\").replace('"', '\\"') for o in node_options)
        return env

    def _to_capture(self, url: str, result: dict, probe: dict, attempts: int) -> Capture:
        # The probe judged one load; judge the one SingleFile archived too.
        response = result.get("response")
        if response:
            headers = {h["name"].lower(): h["value"] for h in response.get("headers", [])}
            check_response(url, int(response.get("status", 0)), response.get("statusText", ""), headers,
                           self.settings.max_capture_bytes)
        data = result["content"].encode("utf-8")
        check_size("page", len(data), self.settings.max_capture_bytes)
        metadata = {
            **probe,
            "title": result.get("title") or probe.get("title", ""),
            "final_url": (result.get("request") or {}).get("url") or probe["final_url"],
            "attempts": attempts,
        }
        return Capture(data, "text/html; charset=utf-8", "html", metadata)

