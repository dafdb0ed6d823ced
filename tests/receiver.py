"""A webhook receiver for tests: it records every request it gets, raw body included, answers the statuses
it is told to, and verifies Standard Webhooks signatures as a client would, from the spec alone."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.helpers import wait_for

SECRET = "whsec_" + base64.b64encode(b"the test suite's webhook key, 32b").decode()
TOLERANCE_S = 300  # how old a timestamp a receiver accepts


@dataclass(frozen=True)
class Hook:
    path: str
    headers: dict[str, str]  # names lower-cased
    raw: bytes

    @property
    def body(self) -> dict:
        return json.loads(self.raw)


def verified(hook: Hook, secret: str = SECRET) -> dict:
    """The body of a webhook whose signature checks out with ``secret`` (else AssertionError)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    webhook_id, timestamp = hook.headers["webhook-id"], hook.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) < TOLERANCE_S
    expected = base64.b64encode(
        hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + hook.raw, hashlib.sha256).digest()
    ).decode()
    signatures = [s.split(",", 1)[1] for s in hook.headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in signatures), "bad signature"
    return hook.body


class Receiver:
    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        # path -> statuses to answer in turn (the last one repeats), or (status, headers); unlisted: 204
        self.answers: dict[str, list] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.hooks.append(Hook(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
                    answers = receiver.answers.get(self.path, [204])
                    answer = answers.pop(0) if len(answers) > 1 else answers[0]
                status, headers = answer if isinstance(answer, tuple) else (answer, {})
                self.send_response(status)
                for name, value in {"Content-Length": "0", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Hook]:
        with self._lock:
            return [hook for hook in self.hooks if hook.path == path]

    def wait(self, path: str, count: int = 1, timeout_s: float = 60) -> list[Hook]:
        return wait_for(
            lambda: len(found := self.at(path)) >= count and found, timeout_s, f"{count} webhook(s) at {path}"
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
