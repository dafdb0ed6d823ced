"""The real Google Cloud Firestore emulator (Java, from the Cloud SDK), run as a subprocess on 127.0.0.1.

    with FirestoreEmulator() as firestore:
        Settings(firestore_project_id="htbase-local", firestore_emulator_host=firestore.host)
        ...
        firestore.stop(); firestore.start()   # an outage, then the same emulator back on the same port
        firestore.reset("htbase-local")        # drop every document of a project

The emulator keeps its data in memory: a restart comes back empty.
"""
from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from emulators import free_port

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
    raise RuntimeError("the Firestore emulator is not installed "
                       "(gcloud components install cloud-firestore-emulator)")


class FirestoreEmulator:
    def __init__(self, port: int | None = None, jar: Path | str | None = None, java: str = "java",
                 start_timeout_s: float = 60.0) -> None:
        self._fixed_port = port
        self.port = port or 0
        self.jar = Path(jar) if jar else find_jar()
        self.java = java
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen | None = None
        self._log = None

    @property
    def host(self) -> str:
        """``host:port``, the form FIRESTORE_EMULATOR_HOST takes."""
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> "FirestoreEmulator":
        """Start the emulator and return once it serves writes.

        The first start picks a free port (a fixed port gets a single attempt);
        a start after ``stop`` reuses the port, as a service coming back would.
        """
        if self._process is None:
            attempts = 1 if self._fixed_port or self.port else 3
            for attempt in range(attempts):
                self.port = self.port or free_port()
                try:
                    self._spawn()
                    break
                except RuntimeError:
                    if attempt == attempts - 1:
                        raise
                    self.port = 0  # taken before the emulator bound it: try another one
        return self

    def _spawn(self) -> None:
        # Logs go to a file, not a pipe: an unread pipe fills up and blocks the emulator.
        self._log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [self.java, "-cp", str(self.jar), MAIN_CLASS, "start", "--host=127.0.0.1", f"--port={self.port}"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                output = self._read_log()
                self.stop()
                raise RuntimeError(f"the Firestore emulator exited on {self.host}: {output}")
            try:
                with urllib.request.urlopen(self.endpoint, timeout=1):
                    break
            except OSError:  # not listening yet
                time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"the Firestore emulator did not answer on {self.host} within {self.start_timeout_s}s")
        self._warm_up(deadline)

    def _warm_up(self, deadline: float) -> None:
        # The emulator answers "Ok" long before it serves documents: its first
        # write takes seconds (the JVM loads and compiles the document path).
        # Pay that here, so that "started" means a client's write is fast.
        name = f"projects/{WARMUP_PROJECT}/databases/(default)/documents/warmup/warmup"
        request = urllib.request.Request(f"{self.endpoint}/v1/{urllib.parse.quote(name)}", data=b'{"fields": {}}',
                                         method="PATCH", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=max(1.0, deadline - time.monotonic())):
            pass
        self.reset(WARMUP_PROJECT)

    def _read_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> "FirestoreEmulator":
        """Stop and start again on the same port (the data does not survive)."""
        self.stop()
        return self.start()

    def reset(self, project: str) -> None:
        """Delete every document of ``project``."""
        path = urllib.parse.quote(f"/emulator/v1/projects/{project}/databases/(default)/documents")
        request = urllib.request.Request(f"{self.endpoint}{path}", method="DELETE")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def __enter__(self) -> "FirestoreEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
