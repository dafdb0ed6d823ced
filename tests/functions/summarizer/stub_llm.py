"""A real HTTP server that speaks OpenAI chat completions and TGI's /generate, scripted per test.

Replies come from the script (in order) and then from ``respond`` (a function
of the call). Every request is recorded with its arrival time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GOOD_SUMMARY = {
    "lede": "The city council approved forty kilometres of protected bicycle lanes downtown.",
    "summary": "After two years of debate the council voted 7 to 2 for protected bicycle lanes on six streets. "
    "Shop owners fear losing parking, so a parking study comes first. Work starts next spring.",
    "key_points": [
        "The council voted 7 to 2 for the lanes.",
        "Parking on six streets will be replaced.",
        "A federal grant pays most of the 18.5 million dollars.",
    ],
    "tags": ["Cycling", "city council", "transport"],
    "language": "en",
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able, or str sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival

    @property
    def system(self) -> str:
        return self.body.get("messages", [{}])[0].get("content", "")

    @property
    def is_notes(self) -> bool:
        return self.system.startswith("You take notes")


def chat(content: str, *, prompt_tokens: int = 120, completion_tokens: int = 80, model: str = "stub-model") -> Reply:
    return Reply(
        body={
            "id": "chatcmpl-stub",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def good_chat(**changes: Any) -> Reply:
    return chat(json.dumps({**GOOD_SUMMARY, **changes}))


def tgi(text: str, generated_tokens: int = 42) -> Reply:
    return Reply(
        body={"generated_text": text, "details": {"finish_reason": "eos_token", "generated_tokens": generated_tokens}}
    )


class StubLLM:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.respond: Callable[[Call], Reply] | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (``/v1``), as LLM_BASE_URL would be set."""
        return self.base + "/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_reply(self, call: Call) -> Reply:
        with self._lock:
            self.calls.append(call)
            if self._script:
                return self._script.popleft()
        if self.respond:
            return self.respond(call)
        return Reply(500, {"error": "the stub has no reply scripted"})

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                at = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                call = Call(self.path, json.loads(raw or b"{}"), dict(self.headers), at)
                reply = stub._next_reply(call)
                time.sleep(reply.delay)
                body = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
                data = body.encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def refused_url() -> str:
    """A local URL nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
