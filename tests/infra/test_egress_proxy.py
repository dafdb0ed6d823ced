"""The egress proxy every archiver fetches through, driven by real clients
(requests, raw sockets, Chromium) against real servers on loopback.

Only 127.0.0.0/8 is ever connected to: the ``connections`` fixture
(tests/egress_fixtures.py) records every upstream connection the proxy opens
and fails any other address before a packet leaves.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playwright.sync_api import sync_playwright

from functions.archivers.browser import CHROMIUM_FLAGS
from infra.egress.policy import SETTING_HINT, EgressPolicy
from infra.egress.proxy import REFUSED_HEADER, EgressProxy
from tests.egress_fixtures import fake_dns, png
from tests.site.server import gzip_bomb

LOOPBACK = f"refused: 127.0.0.1 (loopback); {SETTING_HINT}"


def session_via(proxy: EgressProxy) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy.url, "https": proxy.url}
    return session


def proxy_socket(proxy: EgressProxy) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_proxy_forwards_http_to_an_allowed_address(proxy, serve, connections):
    site = serve("127.0.0.2", {"/hello": ("text/plain", b"hello from 127.0.0.2")})
    response = session_via(proxy).get(site.url("/hello?x=1"), timeout=10)
    assert response.status_code == 200
    assert response.text == "hello from 127.0.0.2"
    assert site.requests == ["/hello?x=1"]  # origin-form on the way out
    assert connections == [("127.0.0.2", site.port)]


def test_proxy_keeps_the_client_connection_alive(proxy, serve):
    site = serve("127.0.0.2", {"/a": ("text/plain", b"A"), "/b": ("text/plain", b"B")})
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", site.url("/a"))
    first = conn.getresponse()
    assert first.read() == b"A" and not first.will_close
    sock = conn.sock
    conn.request("GET", site.url("/b"))
    assert conn.getresponse().read() == b"B"
    assert conn.sock is sock  # both requests on one connection
    conn.close()


def test_proxy_tunnels_connect_to_an_allowed_address(proxy, serve, connections):
    site = serve("127.0.0.2", {"/tunnel": ("text/plain", b"through the tunnel")})
    host, port = proxy.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.set_tunnel("127.0.0.2", site.port)  # CONNECT, then plain HTTP inside the tunnel
    conn.request("GET", "/tunnel")
    assert conn.getresponse().read() == b"through the tunnel"
    conn.close()
    assert connections == [("127.0.0.2", site.port)]


def test_proxy_refuses_loopback_with_403_and_a_reason(proxy, serve, connections, caplog):
    forbidden = serve("127.0.0.1", {"/secret": ("text/plain", b"internal")})
    with caplog.at_level(logging.WARNING, logger="htbase.egress"):
        response = session_via(proxy).get(forbidden.url("/secret"), timeout=10)
    assert response.status_code == 403
    assert response.headers[REFUSED_HEADER] == LOOPBACK
    assert LOOPBACK in response.text
    assert forbidden.requests == [] and connections == []
    assert any(LOOPBACK in r.getMessage() for r in caplog.records)


def test_proxy_refuses_connect_to_loopback(proxy, serve, connections):
    forbidden = serve("127.0.0.1", {})
    with proxy_socket(proxy) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{forbidden.port} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = read_head(sock).decode()
    assert head.startswith(f"HTTP/1.1 403 {LOOPBACK}\r\n")
    assert f"{REFUSED_HEADER}: {LOOPBACK}\r\n" in head
    assert forbidden.requests == [] and connections == []
    # requests reports a refused tunnel by its status line; the reason survives.
    with pytest.raises(requests.exceptions.ProxyError, match=r"403 refused: 127\.0\.0\.1 \(loopback\)"):
        session_via(proxy).get(f"https://127.0.0.1:{forbidden.port}/", timeout=10)


def test_redirect_to_cloud_metadata_is_refused_before_connecting(proxy, serve, connections):
    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    site = serve("127.0.0.2", {"/go": redirect})
    response = session_via(proxy).get(site.url("/go"), timeout=10)
    assert response.history[0].status_code == 302
    assert response.url == "http://169.254.169.254/latest/meta-data/"
    assert response.status_code == 403
    assert response.headers[REFUSED_HEADER] == f"refused: 169.254.169.254 (cloud metadata); {SETTING_HINT}"
    assert connections == [("127.0.0.2", site.port)]  # nothing else was even attempted


def test_proxy_connects_to_the_address_it_vetted(proxy, serve, connections, monkeypatch):
    """DNS rebinding: the name resolves to an allowed address once, then to
    loopback. The proxy looks up once and connects to what it checked."""
    site = serve("127.0.0.2", {"/": ("text/plain", b"vetted")})
    lookups = fake_dns(monkeypatch, {"rebind.example": ["127.0.0.2", "127.0.0.1"]})
    response = session_via(proxy).get(f"http://rebind.example:{site.port}/", timeout=10)
    assert response.text == "vetted"
    assert lookups == ["rebind.example"]
    assert connections == [("127.0.0.2", site.port)]


def test_origin_cannot_pose_as_the_guard(proxy, serve):
    def forged(handler):
        handler.send_response(403)
        handler.send_header(REFUSED_HEADER, "refused: made up")
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    site = serve("127.0.0.2", {"/forged": forged})
    response = session_via(proxy).get(site.url("/forged"), timeout=10)
    assert response.status_code == 403
    assert REFUSED_HEADER not in response.headers


def test_unreachable_origin_is_a_502(proxy):
    with socket.create_server(("127.0.0.2", 0)) as placeholder:
        port = placeholder.getsockname()[1]  # closed again below: nothing listens there
    response = session_via(proxy).get(f"http://127.0.0.2:{port}/", timeout=10)
    assert response.status_code == 502
    assert f"cannot connect to 127.0.0.2:{port}" in response.text


def test_a_request_that_is_not_for_a_proxy_is_a_400(proxy):
    with proxy_socket(proxy) as sock:
        sock.sendall(b"GET /local HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_head(sock).startswith(b"HTTP/1.1 400 ")


BIG = 24 * 1024 * 1024


def stream_big(handler, framing: str) -> None:
    block = bytes(range(256)) * 256  # 64 KiB
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    if framing == "length":
        handler.send_header("Content-Length", str(BIG))
    elif framing == "chunked":
        handler.send_header("Transfer-Encoding", "chunked")
    else:
        handler.send_header("Connection", "close")
        handler.close_connection = True
    handler.end_headers()
    for _ in range(BIG // len(block)):
        if framing == "chunked":
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
        else:
            handler.wfile.write(block)
    if framing == "chunked":
        handler.wfile.write(b"0\r\n\r\n")


@pytest.mark.parametrize("framing", ["length", "chunked", "until-close"])
def test_large_bodies_stream_through(proxy, serve, framing):
    site = serve("127.0.0.2", {"/big": lambda handler: stream_big(handler, framing)})
    expected = hashlib.sha256(bytes(range(256)) * 256 * (BIG // 65536)).hexdigest()
    start = time.monotonic()
    with session_via(proxy).get(site.url("/big"), stream=True, timeout=30) as response:
        digest, size = hashlib.sha256(), 0
        for chunk in response.iter_content(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    assert (size, digest.hexdigest()) == (BIG, expected)
    assert time.monotonic() - start < 10


def echo(handler) -> None:
    if handler.headers.get("Transfer-Encoding") == "chunked":
        body = b""
        while (size := int(handler.rfile.readline(), 16)) > 0:
            body += handler.rfile.read(size)
            handler.rfile.readline()
        handler.rfile.readline()
    else:
        body = handler.rfile.read(int(handler.headers["Content-Length"]))
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_request_bodies_are_forwarded(proxy, serve):
    site = serve("127.0.0.2", {"/echo": echo})
    session = session_via(proxy)
    payload = b"x" * 300_000
    assert session.post(site.url("/echo"), data=payload, timeout=10).content == payload
    chunked = session.post(site.url("/echo"), data=iter([b"first ", b"second"]), timeout=10)
    assert chunked.content == b"first second"


def test_expect_100_continue_gets_its_go_ahead(proxy, serve):
    site = serve("127.0.0.2", {"/echo": echo})
    with proxy_socket(proxy) as sock:
        sock.sendall(
            f"POST {site.url('/echo')} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        response = read_head(sock)
        while not response.endswith(b"hello"):
            response += sock.recv(64)
        assert response.startswith(b"HTTP/1.1 200 ")


def test_many_concurrent_clients(proxy, serve):
    site = serve("127.0.0.2", {f"/{n}": ("text/plain", str(n).encode() * 1000) for n in range(100)})

    def fetch(n: int) -> bool:
        with session_via(proxy) as session:
            return session.get(site.url(f"/{n}"), timeout=20).content == str(n).encode() * 1000

    with ThreadPoolExecutor(50) as pool:
        assert all(pool.map(fetch, range(100)))


@pytest.mark.parametrize("answer_first", [True, False], ids=["mid-body", "before-answer"])
def test_client_hanging_up_closes_the_origin_connection(proxy, serve, answer_first):
    """An archiver that gives up must not leave the proxy waiting on the origin."""
    origin_closed = threading.Event()

    def hang(handler):
        if answer_first:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000000")
            handler.end_headers()
            handler.wfile.write(b"partial")
        handler.connection.settimeout(10)
        try:
            if handler.connection.recv(1) == b"":
                origin_closed.set()
        except OSError:
            origin_closed.set()

    site = serve("127.0.0.2", {"/hang": hang})
    with proxy_socket(proxy) as sock:
        sock.sendall(f"GET {site.url('/hang')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        if answer_first:
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        else:
            time.sleep(0.2)  # the request is upstream, the answer pending
    hung_up = time.monotonic()
    assert origin_closed.wait(5)
    assert time.monotonic() - hung_up < 2


def test_stop_closes_open_connections(connections, serve):
    site = serve("127.0.0.2", {})
    running = EgressProxy(EgressPolicy(allow_cidrs=["127.0.0.2/32"])).start()
    sock = proxy_socket(running)
    sock.sendall(f"CONNECT 127.0.0.2:{site.port} HTTP/1.1\r\n\r\n".encode())
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    running.stop()
    sock.settimeout(5)
    assert sock.recv(1) == b""  # the tunnel was torn down
    sock.close()
    with pytest.raises(RuntimeError, match="not running"):
        assert running.url


def test_chromium_loads_an_allowed_page_but_not_its_loopback_resources(proxy, serve, connections):
    """Real Chromium through the proxy: the page on 127.0.0.2 loads, its image
    on 127.0.0.2 shows, the image and stylesheet it pulls from 127.0.0.1 are refused."""
    forbidden = serve("127.0.0.1", {"/pixel.png": ("image/png", png()), "/style.css": ("text/css", b"body{}")})
    page_html = f"""<!DOCTYPE html><html><head>
        <link rel="stylesheet" href="{forbidden.url("/style.css")}"></head><body>
        <p id="text">allowed page</p>
        <img id="allowed" src="/pixel.png"><img id="blocked" src="{forbidden.url("/pixel.png")}">
        </body></html>""".encode()
    site = serve("127.0.0.2", {"/page.html": ("text/html", page_html), "/pixel.png": ("image/png", png())})

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[*CHROMIUM_FLAGS, f"--proxy-server={proxy.url}", "--proxy-bypass-list=<-loopback>"],
        )
        try:
            page = browser.new_page()
            responses = {}
            page.on("response", lambda r: responses.__setitem__(r.url, (r.status, r.headers)))
            assert page.goto(site.url("/page.html"), wait_until="load").status == 200
            assert page.inner_text("#text") == "allowed page"
            widths = page.evaluate("() => [...document.images].map(i => [i.id, i.naturalWidth])")
        finally:
            browser.close()

    assert widths == [["allowed", 3], ["blocked", 0]]
    for path in ("/pixel.png", "/style.css"):
        status, headers = responses[forbidden.url(path)]
        assert status == 403 and headers[REFUSED_HEADER.lower()] == LOOPBACK
    assert forbidden.requests == []
    assert {host for host, _ in connections} == {"127.0.0.2"}


MB = 1024 * 1024


def stream_gzip_bomb(handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Encoding", "gzip")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        for part in gzip_bomb(300):
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        handler.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass  # cut off by the proxy


@pytest.fixture
def limited(connections):
    """The guard with a 10 MB size limit."""
    with EgressProxy(EgressPolicy(allow_cidrs=["127.0.0.2/32"]), max_body_bytes=10 * MB) as running:
        yield running


def dechunk(data: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body as a browser takes it in, chunk by chunk as
    it arrives, and whether the body ended properly."""
    body = bytearray()
    while True:
        line, found, data = data.partition(b"\r\n")
        if not found:
            return bytes(body), False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(body), True
        body += data[:size]
        data = data[size + 2 :]


def test_a_gzip_bomb_is_cut_once_it_inflates_past_the_limit(limited, serve, caplog):
    """300 KB that inflate to 300 MB: the client gets a little more than the
    limit (so it can tell), then the connection ends mid-body."""
    site = serve("127.0.0.2", {"/bomb": stream_gzip_bomb})
    with caplog.at_level(logging.WARNING, logger="htbase.egress"), proxy_socket(limited) as sock:
        sock.sendall(f"GET {site.url('/bomb')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        while data := sock.recv(65536):
            received += data
    head, _, chunked = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Encoding: gzip" in head
    body, complete = dechunk(chunked)
    assert not complete
    assert 10 * MB < len(zlib.decompressobj(31).decompress(body)) <= 13 * MB
    assert any(r.getMessage() == "egress cut a response over the size limit" for r in caplog.records)
    assert any(r.getMessage() == "egress cut a response over the size limit" for r in caplog.records)


def test_bodies_within_the_limit_stream_through_whole(limited, serve):
    page = b"<p>within the limit</p>" * (9 * MB // 23)

    def gzipped(handler):
        body = gzip.compress(page)
        handler.send_response(200)
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    site = serve("127.0.0.2", {"/plain": ("text/html", page), "/gzipped": gzipped})
    session = session_via(limited)
    assert session.get(site.url("/plain"), timeout=30).content == page
    assert session.get(site.url("/gzipped"), timeout=30).content == page


def test_clients_are_offered_only_the_codings_the_proxy_can_measure(limited, serve):
    seen = []

    def record(handler):
        seen.append(handler.headers.get("Accept-Encoding"))
        handler.send_response(204)
        handler.end_headers()

    site = serve("127.0.0.2", {"/": record})
    session = session_via(limited)
    session.get(site.url("/"), headers={"Accept-Encoding": "gzip, deflate, br, zstd"}, timeout=10)
    session.get(site.url("/"), headers={"Accept-Encoding": "br"}, timeout=10)
    assert seen == ["gzip, deflate", "identity"]


def test_a_body_in_a_coding_the_proxy_cannot_measure_is_refused(limited, serve):
    def brotli(handler):
        handler.send_response(200)
        handler.send_header("Content-Encoding", "br")
        handler.send_header("Content-Length", "4")
        handler.end_headers()
        handler.wfile.write(b"\x0b\x01\x80\x00")

    site = serve("127.0.0.2", {"/br": brotli})
    response = session_via(limited).get(site.url("/br"), timeout=10)
    assert response.status_code == 502
    assert "Content-Encoding br is not allowed" in response.text


def test_a_tunnel_is_cut_once_it_carried_the_limit(limited, serve):
    site = serve("127.0.0.2", {"/big": lambda handler: stream_big(handler, "length")})
    host, port = limited.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.set_tunnel("127.0.0.2", site.port)  # CONNECT, then plain HTTP inside the tunnel
    conn.request("GET", "/big")
    response, received = conn.getresponse(), 0
    while chunk := response.read(MB):  # ends early: the tunnel closes
        received += len(chunk)
    conn.close()
    assert 9 * MB < received < 11 * MB  # of the 24 MB sent
