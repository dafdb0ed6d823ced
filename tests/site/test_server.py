"""The test site itself: routes behave as documented, it survives load, and stops cleanly."""

from __future__ import annotations

import io
import socket
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import urllib3
from PIL import Image

from tests.helpers import wait_for
from tests.site.server import serve_test_site


def test_article_and_assets(test_site):
    page = requests.get(test_site.url("/article.html"), timeout=5)
    assert page.status_code == 200
    assert '<meta name="author" content="Margaret Ellison">' in page.text
    assert "SPONSORED: Buy the amazing gizmo" in page.text
    css = requests.get(test_site.url("/static/style.css"), timeout=5).text
    assert "@font-face" in css and "bg.png" in css
    font = requests.get(test_site.url("/static/fonts/htserif.woff"), timeout=5).content
    assert font[:4] == b"wOFF"
    for name in ("hero", "chart", "bg"):
        resp = requests.get(test_site.url(f"/static/img/{name}.png"), timeout=5)
        Image.open(io.BytesIO(resp.content)).verify()
    assert "Rendered by JavaScript 7f3a" in requests.get(test_site.url("/static/app.js"), timeout=5).text


def test_redirects(test_site):
    resp = requests.get(test_site.url("/redirect/3"), timeout=5)
    assert [r.status_code for r in resp.history] == [302, 302, 302]
    assert resp.url == test_site.url("/article.html")
    target = test_site.url("/missing")
    resp = requests.get(test_site.url("/redirect-to"), params={"url": target}, allow_redirects=False, timeout=5)
    assert resp.status_code == 302 and resp.headers["Location"] == target


def test_error_routes(test_site):
    assert requests.get(test_site.url("/missing"), timeout=5).status_code == 404
    assert requests.get(test_site.url("/server-error"), timeout=5).status_code == 500
    assert requests.get(test_site.url("/no-such-file.html"), timeout=5).status_code == 404


def test_huge(test_site):
    resp = requests.get(test_site.url("/huge"), timeout=10)
    assert int(resp.headers["Content-Length"]) == len(resp.content) >= 8 * 1024 * 1024
    assert resp.content.rstrip().endswith(b"</html>")
    unsized = requests.get(test_site.url("/huge?unsized=1"), timeout=10)
    assert "Content-Length" not in unsized.headers and unsized.content == resp.content


def test_slow_never_finishes(test_site):
    start = time.monotonic()
    with requests.get(test_site.url("/slow"), stream=True, timeout=(2, 0.5)) as resp:
        assert resp.status_code == 200
        assert resp.raw.read(20).startswith(b"<!DOCTYPE html>")  # part of the body arrives...
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):  # ...the rest never does
            resp.raw.read(100000)
    assert time.monotonic() - start < 30  # the read timeout ended it: /slow itself never would


def test_many_concurrent_connections(test_site):
    with ThreadPoolExecutor(max_workers=64) as pool:
        codes = list(
            pool.map(lambda _: requests.get(test_site.url("/article.html"), timeout=10).status_code, range(300))
        )
    assert codes == [200] * 300


def test_stops_cleanly_with_open_connections():
    with serve_test_site() as site:
        idle = socket.create_connection((site.host, site.port))  # never sends a request
        slow = requests.get(site.url("/slow"), stream=True, timeout=5)
        server = site._server
        wait_for(lambda: len(server._open) == len(server._threads) == 2, 30, "the server to take both connections")
        handlers = list(server._threads)
        start = time.monotonic()
    # A connection that held up the shutdown would hold it up for good (/slow never ends).
    assert time.monotonic() - start < 30
    assert len(handlers) == 2 and not any(thread.is_alive() for thread in handlers)
    idle.close()
    slow.close()


def test_embed_page_and_request_log(test_site):
    resp = requests.get(test_site.url("/embed"), params={"img": 'http://elsewhere.example/a.png?x=1&y="2"'}, timeout=5)
    assert resp.status_code == 200
    assert '<img src="http://elsewhere.example/a.png?x=1&amp;y=&quot;2&quot;"' in resp.text
    assert (
        "GET",
        "/embed?img=http%3A%2F%2Felsewhere.example%2Fa.png%3Fx%3D1%26y%3D%222%22",
        resp.request.headers["User-Agent"],
    ) in test_site.requests


def test_the_gzip_bomb_is_small_and_inflates_to_the_size_asked(test_site):
    with requests.get(test_site.url("/gzip-bomb?mb=20"), stream=True, timeout=10) as response:
        compressed = response.raw.read(decode_content=False)
    assert response.headers["Content-Encoding"] == "gzip" and len(compressed) < 25 * 1024
    inflater, data, size = zlib.decompressobj(31), compressed, 0
    while data:  # a piece at a time, as a careful client would
        size += len(inflater.decompress(data, 1 << 20))
        data = inflater.unconsumed_tail
    assert inflater.eof and 20 * 1024 * 1024 < size < 20 * 1024 * 1024 + 1024


def test_the_endless_page_keeps_coming(test_site):
    with requests.get(test_site.url("/endless"), stream=True, timeout=10) as response:
        received = 0
        for chunk in response.iter_content(1 << 16):
            received += len(chunk)
            if received > 5 * 1024 * 1024:
                break
    assert received > 5 * 1024 * 1024


def test_cookie_routes_set_show_and_record_cookies(test_site):
    session = requests.Session()
    assert session.get(test_site.url("/cookie/set?value=v1"), timeout=5).headers["Set-Cookie"] == "jar=v1; Path=/"
    page = session.get(test_site.url("/cookie/read?n=1"), timeout=5).text
    assert "Cookie header: jar=v1" in page
    assert ("/cookie/set?value=v1", "") in test_site.cookies and ("/cookie/read?n=1", "jar=v1") in test_site.cookies


@pytest.mark.parametrize(
    "route, jump",
    [
        ("refresh-to", '<meta http-equiv="refresh" content="0;url=http://10.0.0.1/">'),
        ("script-to", '<script>location = "http://10.0.0.1/";</script>'),
    ],
)
def test_pages_that_send_themselves_elsewhere(test_site, route, jump):
    assert jump in requests.get(test_site.url(f"/{route}?url=http://10.0.0.1/"), timeout=5).text
