"""A small local web site for capture tests: static pages plus a few misbehaving routes.

Static files live in ``pages/``. Dynamic routes:

- ``/redirect/N``        302 chain of N hops ending at /article.html
- ``/redirect-to?url=U`` 302 to any URL U (optional ``status=301|303|307|308``)
- ``/missing``           404
- ``/server-error``      500
- ``/slow``              headers and part of a page, then nothing until the client leaves
- ``/huge``              a valid ~8 MB HTML page (``?unsized=1``: no Content-Length)
- ``/embed?img=U``       a small page whose only image is U (any URL: other hosts, file://, ...)
- ``/flaky?key=K``       500 the first time for each K, then the article
- ``/delay?s=N``         the article, after N seconds (a capture long enough to interrupt)
- ``/gate?key=K``        the article once the test opens gate K (``TestSite.open_gate``), not before;
                         ``&page=P``: the page P of ``pages/`` instead; ``&status=N``: the error page N

Hostile pages:

- ``/gzip-bomb?mb=N``    about N KB of gzip that inflates to an N MB page (300 by default), made as it is sent
- ``/endless``           an HTML page that streams until the client leaves
- ``/webrtc?stun=H:P``   a page that gathers ICE candidates with the STUN server H:P (UDP); its ``#ice``
                         element says "complete" once gathering is over
- ``/cookie/set?value=V`` sets the cookies ``jar=V`` (a header) and ``script_jar=V`` (a script);
                         ``&hold=N``: its image takes N seconds (``/delay?s=N&cookie=V``), so it stays
                         open that long; ``/cookie/read`` shows the Cookie header it was sent and the
                         cookies its script sees; both record the header (``TestSite.cookies``)
- ``/refresh-to?url=U``  a page whose meta refresh goes to U; ``/script-to?url=U``: one whose script does

Usage::

    with serve_test_site() as site:
        site.url("/article.html")
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import select
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PAGES = Path(__file__).resolve().parent / "pages"
HUGE_TARGET_BYTES = 8 * 1024 * 1024
MB = 1024 * 1024
# Enough words for the readability archiver to call a page an article.
FILLER = (
    "<p>The harbour master reminds every skipper that the tide tables for the estuary were revised "
    "this season, that the new times apply from the first of the month, and that the lock gates "
    "close an hour earlier on spring tides until the repairs to the outer sill are finished.</p>"
)


@functools.cache
def huge_page() -> bytes:
    """A real HTML document of about 8 MB (built once, then reused)."""
    paragraph = (
        "<p>Paragraph {n}: the tide tables for the estuary were revised again this season, "
        "and the harbour master asks all skippers to check the new times before sailing.</p>\n"
    )
    head = b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Huge page</title></head><body>\n'
    tail = b"</body></html>\n"
    parts, size, n = [head], len(head) + len(tail), 0
    while size < HUGE_TARGET_BYTES:
        chunk = paragraph.format(n=n).encode()
        parts.append(chunk)
        size += len(chunk)
        n += 1
    parts.append(tail)
    return b"".join(parts)


def gzip_bomb(megabytes: int) -> Iterator[bytes]:
    """A gzip stream of an HTML page of ``megabytes`` MB (about 1 KB per MB), made as it is sent:
    a short page with a comment that never ends, which Chromium takes in as fast as it inflates.
    Every MB of the comment is the same block of "A"s; after a full flush the compressor starts
    afresh, so the block compresses to the same bytes every time and is compressed once."""
    start = b"<!DOCTYPE html><html><head><title>Gzip bomb</title></head><body><p>Nothing to see.</p><!--"
    block = b"A" * MB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the gzip frame is written here
    yield b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflate.compress(start) + deflate.flush(zlib.Z_FULL_FLUSH)
    compressed_block = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(start)
    for _ in range(megabytes):
        yield compressed_block
        crc = zlib.crc32(block, crc)
    yield deflate.flush() + struct.pack("<II", crc, (len(start) + megabytes * MB) & 0xFFFFFFFF)


class _Handler(SimpleHTTPRequestHandler):
    server: _Server
    # An idle connection (e.g. a browser's speculative preconnect) gives up after this long.
    timeout = 15

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(PAGES), **kwargs)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self) -> None:
        self.server.record(self)
        route = self._route()
        if route is None:
            super().do_GET()
        else:
            route()

    def do_HEAD(self) -> None:
        self.server.record(self)
        if self._route() is None:
            super().do_HEAD()
        else:
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    def _route(self):
        path = urlsplit(self.path).path
        if path.startswith("/redirect/"):
            return self._redirect_chain
        return {
            "/redirect-to": self._redirect_to,
            "/missing": functools.partial(self._error_page, HTTPStatus.NOT_FOUND),
            "/server-error": functools.partial(self._error_page, HTTPStatus.INTERNAL_SERVER_ERROR),
            "/slow": self._slow,
            "/huge": self._huge,
            "/embed": self._embed,
            "/flaky": self._flaky,
            "/delay": self._delay,
            "/gate": self._gate,
            "/gzip-bomb": self._gzip_bomb,
            "/endless": self._endless,
            "/webrtc": self._webrtc,
            "/cookie/set": self._cookie,
            "/cookie/read": self._cookie,
            "/refresh-to": self._refresh_to,
            "/script-to": self._refresh_to,
        }.get(path)

    def _query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str, status: int = 302) -> None:
        self._send(status, b"", headers={"Location": location})

    def _redirect_chain(self) -> None:
        try:
            hops = int(urlsplit(self.path).path.rsplit("/", 1)[1])
        except ValueError:
            return self._error_page(HTTPStatus.NOT_FOUND)
        self._redirect(f"/redirect/{hops - 1}" if hops > 1 else "/article.html")

    def _redirect_to(self) -> None:
        query = self._query()
        if "url" not in query:
            return self._error_page(HTTPStatus.BAD_REQUEST)
        self._redirect(query["url"], int(query.get("status", 302)))

    def _error_page(self, status: HTTPStatus) -> None:
        # A real body, so a capture that ignores the status would visibly archive an error page.
        body = (
            f"<!DOCTYPE html><html><head><title>{status.value} {status.phrase}</title></head>"
            f"<body><h1>{status.value} {status.phrase}</h1><p>Error page body.</p></body></html>"
        )
        self._send(status, body.encode())

    def _article(self) -> None:
        self._send(200, (PAGES / "article.html").read_bytes())

    def _flaky(self) -> None:
        if self.server.first_time(self._query().get("key", "")):
            return self._error_page(HTTPStatus.INTERNAL_SERVER_ERROR)
        self._article()

    def _delay(self) -> None:
        if self.server.stopping.wait(float(self._query().get("s", "1"))):
            return
        self._article()

    def _gate(self) -> None:
        self.server.gate(self._query().get("key", "")).wait()
        if self.server.stopping.is_set():
            return
        status = int(self._query().get("status", 200))
        if status != 200:
            return self._error_page(HTTPStatus(status))
        self._send(200, (PAGES / Path(self._query().get("page", "article.html")).name).read_bytes())

    def _embed(self) -> None:
        src = html.escape(self._query().get("img", ""), quote=True)
        body = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Embed test</title></head>'
            "<body><h1>Embed test</h1><p>The image below comes from elsewhere.</p>"
            f'<img src="{src}" alt="embedded"></body></html>'
        )
        self._send(200, body.encode())

    def _huge(self) -> None:
        body = huge_page()
        if self._query().get("unsized"):
            # No Content-Length: the size is only known by reading the body (HTTP/1.0, ends at close).
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.end_headers()
            self.wfile.write(body)
        else:
            self._send(200, body)

    def _stream(self, parts: Iterator[bytes], headers: dict[str, str]) -> None:
        """Send ``parts`` as they come, until they end or the client leaves (HTTP/1.0: the body ends at close)."""
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for part in parts:
                if self.server.stopping.is_set():
                    return
                self.wfile.write(part)
        except OSError:
            pass  # the client hung up

    def _gzip_bomb(self) -> None:
        self._stream(
            gzip_bomb(int(self._query().get("mb", 300))),
            {"Content-Type": "text/html; charset=utf-8", "Content-Encoding": "gzip"},
        )

    def _endless(self) -> None:
        def lines() -> Iterator[bytes]:
            yield b"<!DOCTYPE html><html><head><title>Endless</title></head><body>\n"
            n = 0
            while True:
                yield b"".join(b"<p>Line %d of a page that never ends.</p>\n" % (n + i) for i in range(1000))
                n += 1000

        self._stream(lines(), {"Content-Type": "text/html; charset=utf-8"})

    def _webrtc(self) -> None:
        stun = json.dumps("stun:" + self._query().get("stun", "127.0.0.1:3478"))
        body = (
            '<!DOCTYPE html><html><head><title>WebRTC</title></head><body><p id="ice">gathering</p><script>'
            f"const pc = new RTCPeerConnection({{iceServers: [{{urls: {stun}}}]}});"
            "pc.createDataChannel('probe');"
            "pc.onicecandidate = (event) => {"
            " if (!event.candidate) document.getElementById('ice').textContent = 'complete'; };"
            "pc.createOffer().then((offer) => pc.setLocalDescription(offer));"
            "</script></body></html>"
        )
        self._send(200, body.encode())

    def _cookie(self) -> None:
        sent = self.headers.get("Cookie", "")
        self.server.record_cookie(self.path, sent)
        headers, script, hold = {}, "", ""
        if self.path.startswith("/cookie/set"):
            value = self._query().get("value", "set")
            headers["Set-Cookie"] = f"jar={value}; Path=/"
            script = f"document.cookie = {json.dumps(f'script_jar={value}; path=/')};"
            if "hold" in self._query():  # an image that keeps the page loading that long
                hold = f'<img src="/delay?s={float(self._query()["hold"]):g}&amp;cookie={html.escape(value)}" alt="">'
        script += "document.getElementById('script-cookie').textContent = 'document.cookie: ' + document.cookie;"
        body = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Cookie jar</title></head>'
            f'<body><article><h1>Cookie jar</h1><p id="cookie">Cookie header: {html.escape(sent or "none")}</p>'
            f'<p id="script-cookie"></p>{FILLER}{hold}</article><script>{script}</script></body></html>'
        )
        self._send(200, body.encode(), headers=headers)

    def _refresh_to(self) -> None:
        target = self._query().get("url", "/article.html")
        if self.path.startswith("/refresh-to"):
            jump = f'<meta http-equiv="refresh" content="0;url={html.escape(target, quote=True)}">'
        else:
            jump = f"<script>location = {json.dumps(target)};</script>"
        body = (
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Moving on</title>'
            f"{jump}</head><body><article><h1>Moving on</h1>{FILLER}</article></body></html>"
        )
        self._send(200, body.encode())

    def _slow(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", "100000")  # promised, never delivered
        self.end_headers()
        self.wfile.write(b"<!DOCTYPE html><html><head><title>Slow</title></head><body><p>Loading")
        self.wfile.flush()
        # Hold the connection open until the client gives up or the server stops.
        while not self.server.stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.2)
            if readable:
                try:
                    if not self.connection.recv(4096):
                        return  # client closed
                except OSError:
                    return


class _Server(ThreadingHTTPServer):
    # Browsers open many connections at once; don't refuse them under load.
    request_queue_size = 256
    daemon_threads = False
    block_on_close = True  # server_close() joins every handler thread

    def __init__(self, address):
        self.stopping = threading.Event()
        self.requests: list[tuple[str, str, str]] = []  # (method, path, User-Agent), in arrival order
        self.cookies: list[tuple[str, str]] = []  # (path and query, Cookie header) of the cookie routes
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._seen_keys: set[str] = set()
        self._gates: dict[str, threading.Event] = {}
        super().__init__(address, _Handler)

    def gate(self, key: str) -> threading.Event:
        with self._open_lock:
            return self._gates.setdefault(key, threading.Event())

    def first_time(self, key: str) -> bool:
        with self._open_lock:
            fresh = key not in self._seen_keys
            self._seen_keys.add(key)
            return fresh

    def record(self, handler: BaseHTTPRequestHandler) -> None:
        with self._open_lock:
            self.requests.append((handler.command, handler.path, handler.headers.get("User-Agent", "")))

    def record_cookie(self, path: str, header: str) -> None:
        with self._open_lock:
            self.cookies.append((path, header))

    def handle_error(self, request, client_address) -> None:
        # Browsers drop connections they no longer need (e.g. a probe that only
        # wanted the headers); that is normal, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def get_request(self):
        sock, addr = super().get_request()
        with self._open_lock:
            self._open.add(sock)
        return sock, addr

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        """Stop accepting, unblock every handler, and wait for all of them to finish."""
        self.stopping.set()
        with self._open_lock:
            for gate in self._gates.values():
                gate.set()  # the handlers waiting at a gate see ``stopping`` and leave
        self.shutdown()
        with self._open_lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.server_close()


class TestSite:
    __test__ = False  # not a pytest test class

    def __init__(self, server: _Server):
        self._server = server
        host, port = server.server_address[:2]
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        """Every request served so far: (method, path, User-Agent)."""
        with self._server._open_lock:
            return list(self._server.requests)

    @property
    def cookies(self) -> list[tuple[str, str]]:
        """The Cookie header each request to a cookie route carried: (path and query, header)."""
        with self._server._open_lock:
            return list(self._server.cookies)

    def open_gate(self, key: str) -> None:
        """Let the requests for ``/gate?key=key`` (waiting, and to come) have their answer."""
        self._server.gate(key).set()

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)


@contextlib.contextmanager
def serve_test_site(host: str = "127.0.0.1", port: int = 0) -> Iterator[TestSite]:
    """Serve the test site on a free port (or ``port``) for the duration of the block."""
    server = _Server((host, port))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="test-site", daemon=True)
    thread.start()
    try:
        yield TestSite(server)
    finally:
        server.stop()
        thread.join()


if __name__ == "__main__":  # python -m tests.site.server: browse the site by hand
    import time

    with serve_test_site() as site:
        print(site.url("/article.html"), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
