"""The real Google Cloud Firestore emulator (Java, from the Cloud SDK), run as a subprocess on 127.0.0.1.

    with FirestoreEmulator() as firestore:
        Settings(firestore_project_id="htbase-local", firestore_emulator_host=firestore.host)
        ...
        firestore.stop(); firestore.start()   # an outage, then the same emulator back on the same port
        firestore.reset("htbase-local")        # drop every document of a project

The emulator keeps its data in memory: a restart comes back empty. Its output
goes to ``log_path`` if given (appended across restarts), else to a temp file.
"""

from __future__ import annotations

import glob
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Self

from emulators.process import FreePortProcess, http_answers

MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"
WARMUP_PROJECT = "emulator-warmup"


def find_jar() -> Path:
    """The emulator jar that ships with the Google Cloud SDK."""
    roots = ["/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/google-cloud-sdk"]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.insert(0, str(Path(gcloud).resolve().parent.parent))
    for root in roots:
        found = sorted(glob.glob(f"{root}/platform/cloud-firestore-emulator/cloud-firestore-emulator*.jar"))
        if found:
            return Path(found[-1])
    raise RuntimeError("the Firestore emulator is not installed (gcloud components install cloud-firestore-emulator)")


class FirestoreEmulator(FreePortProcess):
    """``start`` returns once the emulator serves writes. The first start picks a free port (a fixed
    port gets a single attempt); a start after ``stop`` reuses the port, as a service coming back would."""

    def __init__(
        self,
        port: int | None = None,
        jar: Path | str | None = None,
        java: str = "java",
        start_timeout_s: float = 60.0,
        log_path: Path | None = None,
    ) -> None:
        self.jar = Path(jar) if jar else find_jar()
        self.java = java
        super().__init__(
            "firestore",
            self._command,
            port=port,
            start_timeout_s=start_timeout_s,
            log_path=log_path,
            probe=lambda: http_answers(self.endpoint, lambda status: status < 400),
        )

    def _command(self, port: int) -> list[str]:
        return [self.java, "-cp", str(self.jar), MAIN_CLASS, "start", "--host=127.0.0.1", f"--port={port}"]

    @property
    def host(self) -> str:
        """``host:port``, the form FIRESTORE_EMULATOR_HOST takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self.alive

    def wait_ready(self) -> Self:
        """Until the emulator serves writes (a start fails, and stops it, if it does not in time)."""
        deadline = time.monotonic() + self.start_timeout_s
        super().wait_ready()
        try:
            self._warm_up(deadline)
        except OSError as error:
            self._fail(f"did not serve its first write: {error}")
        return self

    def _warm_up(self, deadline: float) -> None:
        # The emulator answers "Ok" long before it serves documents: its first
        # write takes seconds (the JVM loads and compiles the document path).
        # Pay that here, so that "started" means a client's write is fast.
        name = f"projects/{WARMUP_PROJECT}/databases/(default)/documents/warmup/warmup"
        request = urllib.request.Request(
            f"{self.endpoint}/v1/{urllib.parse.quote(name)}",
            data=b'{"fields": {}}',
            method="PATCH",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=max(1.0, deadline - time.monotonic())):
            pass
        self.reset(WARMUP_PROJECT)

    def restart(self) -> Self:
        """Stop and start again on the same port (the data does not survive)."""
        self.stop()
        return self.start()

    def reset(self, project: str) -> None:
        """Delete every document of ``project``."""
        path = urllib.parse.quote(f"/emulator/v1/projects/{project}/databases/(default)/documents")
        request = urllib.request.Request(f"{self.endpoint}{path}", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass
