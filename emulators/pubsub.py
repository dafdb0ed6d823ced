"""The real Google Pub/Sub emulator (Java, from the Cloud SDK) on 127.0.0.1.

    with PubSubEmulator() as pubsub:       # a free port
        Settings(pubsub_emulator_host=pubsub.host)

It keeps no state: after ``stop`` and ``start`` (same port) topics and
subscriptions are gone, so run the bootstrap again.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from emulators import free_port
from emulators.process import ManagedProcess, http_answers

_JAR = "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar"


def sdk_roots() -> list[Path]:
    """Where a Google Cloud SDK may be: $CLOUDSDK_ROOT_DIR, beside `gcloud` on PATH, the Debian package."""
    roots = [os.environ.get("CLOUDSDK_ROOT_DIR", "")]
    gcloud = shutil.which("gcloud")
    if gcloud:
        roots.append(str(Path(gcloud).resolve().parent.parent))
    roots += ["/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/google-cloud-sdk"]
    return [Path(root) for root in roots if root]


def find_jar() -> Path:
    for root in sdk_roots():
        found = sorted(glob.glob(str(root / _JAR)))
        if found:
            return Path(found[-1])
    raise RuntimeError(
        "the Pub/Sub emulator is not installed "
        "(Google Cloud SDK component `pubsub-emulator`, Debian: google-cloud-cli-pubsub-emulator)"
    )


class PubSubEmulator(ManagedProcess):
    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        port = port or free_port()
        super().__init__(
            "pubsub",
            ["java", "-jar", str(find_jar()), "--host=127.0.0.1", f"--port={port}"],
            port=port,
            log_path=log_path,
            probe=lambda: http_answers(f"http://127.0.0.1:{port}/", lambda status: status == 200),
        )

    @property
    def host(self) -> str:
        """The value for PUBSUB_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"
