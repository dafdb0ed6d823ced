"""A tiny HTTP server standing in for push services and task targets: it records every request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass(frozen=True)
class Received:
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    body: dict


class Receiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        # path -> statuses to answer in turn (the last one repeats); unlisted paths get 204
        self.answers: dict[str, list[int]] = {}
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._changed:
                    receiver.requests.append(
                        Received(
                            parts.path,
                            {k: v[0] for k, v in parse_qs(parts.query).items()},
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw) if raw else {},
                        )
                    )
                    statuses = receiver.answers.get(parts.path, [204])
                    status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
                    receiver._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, matches: Callable[[Received], bool], count: int = 1, timeout_s: float = 30) -> list[Received]:
        """The first ``count`` requests that match, waiting for them up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                found = [r for r in self.requests if matches(r)]
                if len(found) >= count or time.monotonic() > deadline:
                    return found
                self._changed.wait(deadline - time.monotonic())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def answers(receiver) -> Iterator[dict[str, list[int]]]:
    """This test's scripted answers (path -> statuses in turn, the last one repeats): afterwards every
    path answers 204 again, so no test meets another's script."""
    yield receiver.answers
    receiver.answers.clear()
