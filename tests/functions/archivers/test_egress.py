"""Behind the egress proxy: everything the browser-based archivers fetch, the
page, its redirects, its sub-resources, and SingleFile's own Node-side fetches,
goes through the guard. Here the guard allows only the test site (127.0.0.1,
and localhost); a second site on 127.0.0.2 plays the forbidden internal host."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from functions.archivers.base import PermanentCaptureError
from functions.archivers.browser import Browser
from infra.egress.policy import EgressPolicy
from infra.egress.proxy import EgressProxy
from tests.functions.archivers.conftest import ARCHIVER_CLASSES, BROWSER_ARCHIVERS, captures_normally
from tests.functions.archivers.saved_pages import cli_copy, embedded_png_sizes
from tests.site.server import TestSite, serve_test_site


@pytest.fixture(scope="module")
def forbidden_site() -> Iterator[TestSite]:
    with serve_test_site(host="127.0.0.2") as site:
        yield site


@pytest.fixture(scope="module")
def guarded(archiver_settings) -> Iterator:
    """``guarded(name, **setting_changes)``: an archiver whose Chromium goes through the egress proxy."""
    with (
        EgressProxy(EgressPolicy(allow_cidrs=("127.0.0.1/32", "::1/128"))) as proxy,
        Browser(archiver_settings, proxy_url=proxy.url) as browser,
    ):
        yield lambda name, **changes: ARCHIVER_CLASSES[name](archiver_settings.with_(**changes), browser)


@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_redirect_to_a_forbidden_host_is_refused(guarded, test_site, forbidden_site, name):
    url = test_site.url("/redirect-to?url=" + forbidden_site.url("/article.html"))
    with pytest.raises(PermanentCaptureError, match=r"egress refused for .*: 127\.0\.0\.2 \(loopback\)"):
        guarded(name).capture(url, {})
    assert forbidden_site.requests == []


@pytest.mark.parametrize("route", ["refresh-to", "script-to"])
@pytest.mark.parametrize("name", BROWSER_ARCHIVERS)
def test_a_page_that_sends_itself_to_a_forbidden_host_fails_with_the_refusal(
    guarded, test_site, forbidden_site, name, route
):
    # A meta refresh or a script's `location = ...`: the page the capture ends on is the guard's refusal.
    target = forbidden_site.url("/article.html")
    with pytest.raises(
        PermanentCaptureError, match=rf"egress refused for {re.escape(target)}: 127\.0\.0\.2 \(loopback\)"
    ):
        guarded(name).capture(test_site.url(f"/{route}?url={target}"), {})
    assert forbidden_site.requests == []
    captures_normally(guarded(name), test_site)


@pytest.mark.parametrize("name", ["pdf", "singlefile"])
def test_forbidden_subresources_are_never_fetched(guarded, test_site, forbidden_site, name):
    capture = guarded(name).capture(test_site.url("/embed?img=" + forbidden_site.url("/static/img/hero.png")), {})
    assert capture.data  # the page itself is archived...
    assert forbidden_site.requests == []  # ...without anything from the forbidden host
    if name == "singlefile":
        assert embedded_png_sizes(capture.data.decode()) == set()


def test_singlefile_node_fetches_go_through_the_proxy(guarded, test_site):
    # An image on another origin without CORS headers: the page cannot read it,
    # so SingleFile fetches it from Node; through the proxy it still gets embedded.
    url = test_site.url(f"/embed?img=http://localhost:{test_site.port}/static/img/chart.png?via-node")
    capture = guarded("singlefile").capture(url, {})
    assert (400, 240) in embedded_png_sizes(capture.data.decode())
    assert ("GET", "/static/img/chart.png?via-node", "node") in test_site.requests


def test_without_undici_node_fetches_are_refused_not_sent_direct(guarded, test_site, tmp_path):
    archiver = guarded("singlefile", singlefile_path=cli_copy(tmp_path, leave_out=("undici",)))
    url = test_site.url(f"/embed?img=http://localhost:{test_site.port}/static/img/chart.png?no-undici")
    capture = archiver.capture(url, {})
    assert "Embed test" in capture.data.decode()
    assert embedded_png_sizes(capture.data.decode()) == set()
    assert [r for r in test_site.requests if r[1].endswith("?no-undici") and r[2] == "node"] == []
