"""Pytest plugin (registered in tests/conftest.py): loopback servers and the egress proxy as the
egress and monolith tests drive them. Only 127.0.0.0/8 is ever connected to: ``connections``
records every upstream connection the proxy opens and fails any other address first."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from infra.egress.policy import EgressPolicy
from infra.egress.proxy import EgressProxy


def png(width: int = 3, height: int = 2) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


def fake_dns(monkeypatch, answers: dict[str, list[str]]) -> list[str]:
    """getaddrinfo answering ``answers`` (a name's answers are used in turn;
    "NXDOMAIN": no such name, "SERVFAIL": the resolver failed); returns the log
    of names looked up."""
    real, lookups = socket.getaddrinfo, []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in answers:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = answers[host][min(len(lookups), len(answers[host])) - 1]
        if address == "NXDOMAIN":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if address == "SERVFAIL":
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


# ------------------------------------------------------------------ helpers

Route = Callable[[BaseHTTPRequestHandler], None]


class PageServer:
    """A real HTTP/1.1 server on a loopback address. ``routes`` maps a path to
    (content type, body) or to a function handling the request; every request
    line is recorded in ``.requests``."""

    def __init__(self, host: str, routes: dict[str, tuple[str, bytes] | Route]):
        self.routes = routes
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    content_type, body = route
                    self.send_response(200)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            do_POST = do_GET

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., PageServer]]:
    servers: list[PageServer] = []

    def start(host: str, routes: dict) -> PageServer:
        servers.append(PageServer(host, routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def connections(monkeypatch) -> list[tuple[str, int]]:
    """Every address the proxy connects to; anything outside 127/8 fails
    before connecting (a bug must never send traffic off this machine)."""
    made: list[tuple[str, int]] = []
    real = socket.create_connection

    def guarded(address, *args, **kwargs):
        host, port = address[:2]
        if threading.current_thread().name == "egress-conn":  # the proxy, not a test client
            made.append((host, port))
        if not host.startswith("127."):
            raise ConnectionRefusedError(f"test guard: no traffic to {host}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", guarded)
    return made


@pytest.fixture
def proxy(connections) -> Iterator[EgressProxy]:
    """The guard as tests run it: only 127.0.0.2 is let through."""
    with EgressProxy(EgressPolicy(allow_cidrs=["127.0.0.2/32"])) as running:
        yield running
