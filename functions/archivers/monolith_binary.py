"""The ``monolith`` binary, where installed (container images): one run per
capture, every fetch of it through the egress proxy."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from functions.archivers.base import CaptureTimeout, TransientCaptureError


def run_monolith(binary: str, url: str, proxy_url: str, timeout: float) -> bytes:
    """The page at ``url`` as one HTML file, made by ``binary`` within ``timeout`` seconds."""
    # Only the proxy settings: the tool needs nothing else from our environment.
    env = {"http_proxy": proxy_url, "https_proxy": proxy_url, "HTTP_PROXY": proxy_url, "HTTPS_PROXY": proxy_url}
    with tempfile.TemporaryDirectory(prefix="htbase-monolith-") as tmp:
        out = Path(tmp) / "page.html"
        cmd = [binary, url, "-j", "-I", "-t", str(max(1, int(timeout))), "-o", str(out)]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            raise CaptureTimeout(f"monolith timed out after {timeout:g} s") from None
        if proc.returncode != 0 or not out.is_file():
            tail = proc.stderr.decode("utf-8", "replace").strip()[-500:]
            raise TransientCaptureError(f"monolith exited with {proc.returncode}: {tail}")
        return out.read_bytes()
