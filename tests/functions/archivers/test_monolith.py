"""The monolith archiver's built-in inliner, end to end through the real egress
proxy: the local test site for whole pages and failure modes, small pages of
our own for each kind of reference it must embed."""

from __future__ import annotations

import base64
import json
import random
import re
import sys
import time
from collections.abc import Iterator

import lxml.html
import pytest

from functions.archivers.base import PermanentCaptureError, TransientCaptureError
from functions.archivers.monolith import MonolithArchiver
from functions.inliner import MAX_FRAME_DEPTH
from htbase.config import Settings
from infra.egress.policy import SETTING_HINT, EgressPolicy
from infra.egress.proxy import EgressProxy
from tests.egress_fixtures import png
from tests.site.server import PAGES

TITLE = "Lighthouse Keepers Return to Varne Point After Forty Years"
FONT = (PAGES / "static/fonts/htserif.woff").read_bytes()


@pytest.fixture(scope="module")
def site_proxy() -> Iterator[EgressProxy]:
    """The guard with the test site's address (127.0.0.1) let through, and nothing else."""
    with EgressProxy(EgressPolicy(allow_cidrs=["127.0.0.1/32"])) as running:
        yield running


def archiver(via: EgressProxy | None, **settings) -> MonolithArchiver:
    return MonolithArchiver(Settings(**settings), via.url if via else None)


def data_uri_bytes(uri: str) -> bytes:
    assert uri.startswith("data:") and ";base64," in uri, uri[:80]
    return base64.b64decode(uri.split(";base64,", 1)[1])


CSS_URL = re.compile(r"""url\(\s*["']?([^"')]*)""")


def references(html: str) -> list[str]:
    """Every URL the page would load by itself: media, stylesheets, icons,
    frames, and url()/@import inside CSS (links to navigate to excluded)."""
    doc = lxml.html.document_fromstring(html)
    refs = []
    for el in doc.iter("img", "source", "video", "audio", "input", "track", "iframe", "frame", "embed"):
        refs += [el.get(a) for a in ("src", "poster") if el.get(a)]
        refs += [c.split()[0] for c in re.split(r",\s+", el.get("srcset", "")) if c.strip()]
    refs += [el.get("href") for el in doc.iter("link")]
    for css in [el.text or "" for el in doc.iter("style")] + [el.get("style") for el in doc.iter() if el.get("style")]:
        refs += CSS_URL.findall(css)
    return refs


def external(html: str) -> list[str]:
    return [ref for ref in references(html) if not ref.startswith("data:") and ref != ""]


# ----------------------------------------------------------- the test site


def test_article_becomes_one_self_contained_file(site_proxy, test_site):
    capture = archiver(site_proxy).capture(test_site.url("/article.html"), {})
    html = capture.data.decode("utf-8")
    doc = lxml.html.document_fromstring(html)

    assert (capture.content_type, capture.extension) == ("text/html; charset=utf-8", "html")
    assert capture.metadata["title"] == TITLE
    assert capture.metadata["final_url"] == test_site.url("/article.html")
    assert capture.metadata["engine"] == "builtin"
    # style.css, hero.png, chart.png, bg.png (from the CSS), the font (from the CSS)
    assert (capture.metadata["resources_embedded"], capture.metadata["resources_failed"]) == (5, 0)

    assert external(html) == []
    assert doc.find(".//script") is None and "app.js" not in html
    images = {img.get("alt"): data_uri_bytes(img.get("src")) for img in doc.iter("img")}
    assert images["The Varne Point headland at dusk"] == (PAGES / "static/img/hero.png").read_bytes()
    style = "".join(el.text for el in doc.iter("style"))
    assert f"data:font/woff;base64,{base64.b64encode(FONT).decode()}" in style
    assert "data:image/png;base64," in style  # the CSS background
    assert "The Harbour Gazette" in html and "one hundred and twelve steps" in doc.text_content()
    assert "Rendered by JavaScript" not in html  # no JS ran
    assert doc.find(".//a[@class='brand']").get("href") == test_site.url("/")
    assert [m.get("charset") for m in doc.iter("meta") if m.get("charset")] == ["utf-8"]


def test_redirects_are_followed(site_proxy, test_site):
    capture = archiver(site_proxy).capture(test_site.url("/redirect/3"), {})
    assert capture.metadata["final_url"] == test_site.url("/article.html")
    assert capture.metadata["title"] == TITLE


def test_404_is_permanent(site_proxy, test_site):
    url = test_site.url("/missing")
    with pytest.raises(PermanentCaptureError, match=f"HTTP 404 Not Found for {url}"):
        archiver(site_proxy).capture(url, {})


def test_500_is_transient(site_proxy, test_site):
    with pytest.raises(TransientCaptureError, match="HTTP 500 Internal Server Error"):
        archiver(site_proxy).capture(test_site.url("/server-error"), {})


@pytest.mark.parametrize(
    "status, error", [(429, TransientCaptureError), (408, TransientCaptureError), (410, PermanentCaptureError)]
)
def test_http_status_decides_permanent_or_transient(proxy, serve, status, error):
    def answer(handler):
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    site = serve("127.0.0.2", {"/page": answer})
    with pytest.raises(error, match=f"^HTTP {status} "):
        archiver(proxy).capture(site.url("/page"), {})


def test_page_that_never_finishes_times_out_quickly(site_proxy, test_site):
    url = test_site.url("/slow")
    start = time.monotonic()
    with pytest.raises(TransientCaptureError, match=f"timed out after 2s fetching {url}"):
        archiver(site_proxy).capture(url, {"timeout": 2})
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("path", ["/huge", "/huge?unsized=1"])
def test_oversized_page_is_permanent(site_proxy, test_site, path):
    with pytest.raises(PermanentCaptureError, match="page is over the limit of 1000000 bytes"):
        archiver(site_proxy, max_capture_bytes=1_000_000).capture(test_site.url(path), {})


@pytest.mark.parametrize("scheme", ["http", "https"])  # plain request, and CONNECT
def test_guard_refuses_the_test_site_by_default(test_site, connections, scheme):  # noqa: F811
    url = test_site.url("/article.html").replace("http:", f"{scheme}:")
    with EgressProxy(EgressPolicy()) as guard:
        refusal = rf"^refused: 127\.0\.0\.1 \(loopback\); {re.escape(SETTING_HINT)}$"
        with pytest.raises(PermanentCaptureError, match=refusal):
            archiver(guard).capture(url, {})
    assert connections == []


def test_redirect_to_cloud_metadata_is_permanent(site_proxy, test_site, connections):  # noqa: F811
    url = test_site.url("/redirect-to?url=http://169.254.169.254/latest/meta-data/")
    with pytest.raises(PermanentCaptureError, match=r"refused: 169\.254\.169\.254 \(cloud metadata\)"):
        archiver(site_proxy).capture(url, {})
    assert all(host == "127.0.0.1" for host, _ in connections)


def test_without_a_proxy_handed_in_it_runs_its_own_guard(test_site):
    guarded = archiver(None)
    with pytest.raises(PermanentCaptureError, match=r"refused: 127\.0\.0\.1 \(loopback\)"):
        guarded.capture(test_site.url("/article.html"), {})
    guarded.close()
    allowed = archiver(None, egress_allow_cidrs=("127.0.0.1/32",))
    assert allowed.capture(test_site.url("/article.html"), {}).metadata["title"] == TITLE
    allowed.close()


@pytest.mark.parametrize("timeout", ["soon", 0, -1, True])
def test_bad_timeout_option_is_permanent(site_proxy, test_site, timeout):
    with pytest.raises(PermanentCaptureError, match="option 'timeout' must be a positive number of seconds"):
        archiver(site_proxy).capture(test_site.url("/article.html"), {"timeout": timeout})


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "ftp://example.com/"])
def test_only_http_urls(site_proxy, url):
    with pytest.raises(PermanentCaptureError, match="only http and https URLs can be archived"):
        archiver(site_proxy).capture(url, {})


# ------------------------------------------------------- our own pages

A_PNG, B_PNG = png(3, 2), png(5, 4)
FEATURES = b"""<!DOCTYPE html><html><head>
<base href="/sub/">
<meta http-equiv="refresh" content="5; url=/elsewhere">
<link rel="preload" href="font.woff" as="font">
<link rel="icon" href="icon.png">
<link rel="stylesheet" href="main.css" media="screen">
<style>@import "more.css"; .x { background: url(bg.png) }</style>
<script>document.write("scripted")</script>
</head><body onload="evil()">
<a href="page2.html" onclick="evil()">next</a> <a id="js" href="javascript:evil()">js</a> <a href="#top">top</a>
<img id="img" src="a.png" srcset="a.png 1x, b.png 2x" onerror="evil()">
<picture><source srcset="b.png 100w, a.png 200w" type="image/png"><img src="a.png"></picture>
<video poster="poster.png"></video>
<input type="image" src="a.png">
<div style="background-image: url('bg.png')">styled</div>
<noscript><img id="fallback" src="noscript.png"></noscript>
<iframe id="frame" src="frame.html"></iframe>
<iframe id="loop" src="loop.html"></iframe>
<iframe id="inline" srcdoc="<p>inline frame</p><img src='b.png'><script>evil()</script>"></iframe>
<iframe id="image" src="poster.png"></iframe>
<p>Body text stays.</p>
</body></html>"""
FEATURE_ROUTES = {
    "/features.html": ("text/html", FEATURES),
    "/sub/icon.png": ("image/png", png(1, 1)),
    "/sub/main.css": ("text/css", b'@import url("nested/deep.css") screen;\nbody { background: url(../img/bg2.png) }'),
    "/sub/nested/deep.css": ("text/css", b'@font-face { font-family: F; src: url(font.woff) format("woff") }'),
    "/sub/nested/font.woff": ("font/woff", FONT),
    "/img/bg2.png": ("image/png", png(2, 2)),
    "/sub/more.css": ("text/css", b'.m { background: url("/sub/a.png") } /* url(commented-out.png) */'),
    "/sub/bg.png": ("image/png", png(4, 4)),
    "/sub/a.png": ("image/png", A_PNG),
    "/sub/b.png": ("image/png", B_PNG),
    "/sub/poster.png": ("image/png", png(6, 6)),
    "/sub/noscript.png": ("image/png", png(7, 7)),
    "/sub/frame.html": ("text/html", b'<p>in the frame</p><img src="b.png"><script>evil()</script>'),
    "/sub/loop.html": ("text/html", b'<p>loop</p><iframe src="loop.html"></iframe>'),
}


def test_every_kind_of_reference_is_embedded(proxy, serve):  # noqa: F811
    site = serve("127.0.0.2", FEATURE_ROUTES)
    capture = archiver(proxy).capture(site.url("/features.html"), {})
    html = capture.data.decode("utf-8")
    doc = lxml.html.document_fromstring(html)

    assert external(html) == []
    assert "Body text stays." in doc.text_content()
    assert capture.metadata["resources_failed"] == 0
    assert capture.metadata["resources_embedded"] == 13  # every route but the page itself
    assert "commented-out" not in "".join(site.requests)

    # Nothing active is left.
    assert doc.find(".//script") is None and "scripted" not in html
    assert not [name for el in doc.iter() for name in el.attrib if name.startswith("on")]
    assert "javascript:" not in html and doc.get_element_by_id("js").get("href") is None
    assert doc.find(".//base") is None and "refresh" not in html and "preload" not in html
    # Links point back at the live site; in-page anchors stay.
    assert [a.get("href") for a in doc.iter("a")] == [site.url("/sub/page2.html"), None, "#top"]

    img = doc.get_element_by_id("img")
    assert data_uri_bytes(img.get("src")) == A_PNG
    assert [data_uri_bytes(c.split()[0]) for c in img.get("srcset").split(", ")] == [A_PNG, B_PNG]
    assert [c.split()[1] for c in doc.find(".//source").get("srcset").split(", ")] == ["100w", "200w"]
    assert data_uri_bytes(doc.find(".//video").get("poster")) == png(6, 6)
    assert data_uri_bytes(doc.find(".//input").get("src")) == A_PNG
    assert data_uri_bytes(doc.find(".//link[@rel='icon']").get("href")) == png(1, 1)
    assert data_uri_bytes(doc.get_element_by_id("fallback").get("src")) == png(7, 7)  # noscript unwrapped
    assert doc.find(".//noscript") is None

    # The stylesheet became a <style>; its @import a data: stylesheet, whose font is embedded.
    main = doc.find(".//style[@media='screen']")
    assert data_uri_bytes(CSS_URL.findall(main.text)[1]) == png(2, 2)
    deep = data_uri_bytes(re.search(r'@import url\("([^"]+)"\) screen;', main.text)[1]).decode()
    assert data_uri_bytes(CSS_URL.findall(deep)[0]) == FONT
    assert data_uri_bytes(CSS_URL.findall(doc.find(".//div").get("style"))[0]) == png(4, 4)

    frame = lxml.html.document_fromstring(data_uri_bytes(doc.get_element_by_id("frame").get("src")))
    assert frame.text_content().strip().startswith("in the frame")
    assert data_uri_bytes(frame.find(".//img").get("src")) == B_PNG and frame.find(".//script") is None

    inline = lxml.html.document_fromstring(doc.get_element_by_id("inline").get("srcdoc"))
    assert data_uri_bytes(inline.find(".//img").get("src")) == B_PNG and inline.find(".//script") is None
    assert data_uri_bytes(doc.get_element_by_id("image").get("src")) == png(6, 6)

    depth, src = 0, doc.get_element_by_id("loop").get("src")
    while src:  # each level embeds the next, until the depth limit empties it
        depth, src = depth + 1, lxml.html.document_fromstring(data_uri_bytes(src)).find(".//iframe").get("src")
    assert depth == MAX_FRAME_DEPTH


def test_page_charset_is_respected_and_output_is_utf8(proxy, serve):  # noqa: F811
    text = "Café – “quoted” naïve"
    page = f'<html><head><meta charset="windows-1252"><title>{text}</title></head><body><p>{text}</p></body></html>'
    site = serve("127.0.0.2", {"/legacy.html": ("text/html", page.encode("cp1252"))})
    capture = archiver(proxy).capture(site.url("/legacy.html"), {})
    doc = lxml.html.document_fromstring(capture.data.decode("utf-8"))
    assert capture.metadata["title"] == text
    assert doc.find(".//p").text == text
    assert [m.get("charset") for m in doc.iter("meta") if m.get("charset")] == ["utf-8"]


def test_failing_sub_resources_are_left_out_and_counted(proxy, serve):  # noqa: F811
    forbidden = serve("127.0.0.1", {"/secret.png": ("image/png", A_PNG)})
    page = f"""<html><body><p>still archived</p><img id="ok" src="/a.png"><img id="gone" src="/missing.png">
        <img id="refused" src="{forbidden.url("/secret.png")}"></body></html>""".encode()
    site = serve("127.0.0.2", {"/page.html": ("text/html", page), "/a.png": ("image/png", A_PNG)})
    capture = archiver(proxy).capture(site.url("/page.html"), {})
    doc = lxml.html.document_fromstring(capture.data)

    assert data_uri_bytes(doc.get_element_by_id("ok").get("src")) == A_PNG
    assert doc.get_element_by_id("gone").get("src") == "" and doc.get_element_by_id("refused").get("src") == ""
    assert (capture.metadata["resources_embedded"], capture.metadata["resources_failed"]) == (1, 2)
    errors = {f["url"]: f["error"] for f in capture.metadata["failed_resources"]}
    assert errors == {
        site.url("/missing.png"): f"HTTP 404 Not Found for {site.url('/missing.png')}",
        forbidden.url("/secret.png"): f"refused: 127.0.0.1 (loopback); {SETTING_HINT}",
    }
    assert forbidden.requests == []


def test_embedded_total_respects_the_size_limit(proxy, serve):  # noqa: F811
    blobs = {f"/{n}.png": ("image/png", random.Random(n).randbytes(30_000)) for n in range(4)}
    page = b"<html><body>" + b"".join(b'<img src="%s">' % p.encode() for p in blobs) + b"</body></html>"
    site = serve("127.0.0.2", {"/page.html": ("text/html", page), **blobs})
    limit = 100_000  # room for two images as base64 (40 kB each), not three
    capture = archiver(proxy, max_capture_bytes=limit).capture(site.url("/page.html"), {})
    assert len(capture.data) <= limit
    assert (capture.metadata["resources_embedded"], capture.metadata["resources_failed"]) == (2, 2)
    assert {f["error"] for f in capture.metadata["failed_resources"]} == {"over the capture limit of 100000 bytes"}


def test_sub_resources_are_fetched_concurrently(proxy, serve):  # noqa: F811
    def slow_image(handler):
        time.sleep(0.4)
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(len(A_PNG)))
        handler.end_headers()
        handler.wfile.write(A_PNG)

    page = b"<html><body>" + b"".join(b'<img src="/slow/%d.png">' % n for n in range(6)) + b"</body></html>"
    routes = {"/page.html": ("text/html", page), **{f"/slow/{n}.png": slow_image for n in range(6)}}
    site = serve("127.0.0.2", routes)
    start = time.monotonic()
    capture = archiver(proxy).capture(site.url("/page.html"), {})
    assert capture.metadata["resources_embedded"] == 6
    assert time.monotonic() - start < 1.6  # one after another would take 2.4 s


# ----------------------------------------------------- the monolith binary

FAKE_MONOLITH = """#!{python}
# Test double for the monolith CLI: records how it was called in its output file.
import json, os, sys
args = sys.argv[1:]
if args[0].endswith("/unreachable"):
    sys.exit("monolith: could not fetch " + args[0])
with open(args[args.index("-o") + 1], "w") as out:
    out.write("<html><head><title>from the binary</title></head><body>"
              + json.dumps({{"args": args, "env": dict(os.environ)}}) + "</body></html>")
"""


def test_the_binary_is_run_through_the_proxy_when_installed(site_proxy, tmp_path, monkeypatch):
    """The real binary is not obtainable here; a double checks how it is called."""
    binary = tmp_path / "monolith"
    binary.write_text(FAKE_MONOLITH.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setenv("HTBASE_TEST_SECRET", "must not leak")
    tool = archiver(site_proxy, monolith_path=str(binary))

    capture = tool.capture("https://example.com/a", {"timeout": 7})
    called = json.loads(lxml.html.document_fromstring(capture.data).find(".//body").text)
    assert called["args"][:6] == ["https://example.com/a", "-j", "-I", "-t", "7", "-o"]
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert called["env"][name] == site_proxy.url
    assert "HTBASE_TEST_SECRET" not in called["env"]
    assert capture.metadata == {"title": "from the binary", "final_url": "https://example.com/a", "engine": "monolith"}

    with pytest.raises(TransientCaptureError, match="monolith exited with 1: monolith: could not fetch"):
        tool.capture("https://example.com/unreachable", {})
