"""A Cloud Tasks emulator (PyPI ``gcloud-tasks-emulator``) on 127.0.0.1, from a venv of its own.

Google ships no Cloud Tasks emulator. This one POSTs HTTP tasks for real and
honours ``schedule_time``, but ignores queue retry and rate settings and has no
OIDC. It pins protobuf 4.x, which the project's venv (protobuf 6+) cannot
share, so ``ensure_venv`` builds a separate venv on first use (about a minute,
once per machine). It binds every interface; the launcher below makes it bind
127.0.0.1 only.

    with CloudTasksEmulator() as tasks:
        client = tasks_client(tasks.host)
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from emulators import free_port
from emulators.process import ManagedProcess
from htbase.config import PROJECT_ROOT

if TYPE_CHECKING:
    from google.cloud.tasks_v2 import CloudTasksClient

VERSION = "0.6.2"
# The emulator and the gRPC/protobuf stack it was tried with.
REQUIREMENTS = (
    f"gcloud-tasks-emulator=={VERSION}",
    "google-cloud-tasks==2.23.0",
    "google-api-core==2.30.3",
    "protobuf==4.25.9",
    "grpcio==1.85.1",
    "grpcio-status==1.62.3",
)
DEFAULT_VENV = PROJECT_ROOT / ".stack" / "tasks-venv"

# Run by the venv's python with the port as argv[1].
_LAUNCHER = """
import logging, sys
import grpc

_server = grpc.server

def loopback_server(*args, **kwargs):
    # The emulator binds [::]:PORT; bind 127.0.0.1 only, and exclusively (gRPC sets SO_REUSEPORT by default).
    kwargs["options"] = [*(kwargs.get("options") or []), ("grpc.so_reuseport", 0)]
    server = _server(*args, **kwargs)
    bind = server.add_insecure_port
    server.add_insecure_port = lambda address: bind("127.0.0.1:" + address.rsplit(":", 1)[1])
    return server

grpc.server = loopback_server
from gcloud_tasks_emulator.server import create_server

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
create_server("127.0.0.1", int(sys.argv[1])).run()
"""


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The venv's python, creating the venv first if needed (a file lock serializes concurrent callers)."""
    python, marker, wanted = venv / "bin" / "python", venv / ".installed", "\n".join(REQUIREMENTS)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.read_text() != wanted:
            print(f"creating {venv} for the Cloud Tasks emulator (once, about a minute)", file=sys.stderr)
            for command in (
                [sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
            ):
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
            marker.write_text(wanted)
    return python


def tasks_client(host: str) -> CloudTasksClient:
    """A Cloud Tasks client for the emulator at ``host`` ("127.0.0.1:PORT")."""
    # Imported here: the client library takes seconds to load, and `stack down` never needs it.
    import grpc
    from google.cloud.tasks_v2 import CloudTasksClient
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=grpc.insecure_channel(host)))


class CloudTasksEmulator(ManagedProcess):
    def __init__(self, port: int | None = None, log_path: Path | None = None, venv: Path = DEFAULT_VENV) -> None:
        port = port or free_port()
        super().__init__(
            "tasks",
            [str(ensure_venv(venv)), "-c", _LAUNCHER, str(port)],
            port=port,
            log_path=log_path,
            probe=self._answers,
        )
        self._client: CloudTasksClient | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _answers(self) -> bool:
        self._client = self._client or tasks_client(self.host)
        try:
            self._client.list_queues(parent="projects/probe/locations/probe", timeout=2)
            return True
        except Exception:  # any gRPC failure: not up yet
            return False
