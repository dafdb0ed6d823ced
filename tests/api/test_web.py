"""The web page in Chromium, against the all-in-one service capturing a page of the local test site for real:
sign in, archive from the box and watch the badges (item page and home page) turn done without a reload, read
the item, open the SingleFile copy (its script reaches neither a readable cookie nor the API), search, tag,
import bookmarks, run the bookmarklet on another site, delete. Then the page over HTTP, on the quiet service."""

from __future__ import annotations

import html
import io
import json
import re
import threading
import uuid
import zipfile
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from api.app import create_app
from api.web import bookmarklet, reader_view
from emulators.gcs import FakeGcsServer
from htbase.config import Settings
from htbase.topology import SUMMARIZE
from htbase.urls import url_hash
from infra.db import migrate
from infra.keys import ApiKeys
from infra.ledger import NewItem
from infra.models import OutboxMessage
from infra.runtime import Runtime
from infra.summaries import Summaries
from service.embedded import EmbeddedService
from tests.api.test_signed_downloads import finished, key_signing_store
from tests.infra.test_search import capture

ARCHIVERS = ("singlefile", "readability", "screenshot")
CANARY = "canary-only-htbase-may-read"


@pytest.fixture
def site(embedded_settings):
    """The service on loopback, with an admin key made (so the page asks for it); its URL and the key."""
    service = EmbeddedService(embedded_settings.with_(archivers=ARCHIVERS)).start()
    _, key = ApiKeys(service.runtime.engine).create("browser", "admin")
    server = make_server("127.0.0.1", 0, service.api, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", key
    server.shutdown()
    thread.join()
    service.close()


def test_the_archive_in_a_browser(site, test_site, embedded_settings):
    base, key = site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=embedded_settings.chromium_path)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(base + "/")
            expect(page).to_have_url(re.compile(r"/sign-in"))
            page.fill("#key", key)
            page.click("button[type=submit] >> text=Sign in")
            expect(page.locator("h1")).to_have_text(re.compile("The archive"))
            cookie = next(c for c in context.cookies() if c["name"] == "htbase_key")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

            # Archive from the box (a page the test site holds back until told): the badges of the item page,
            # and of the home page in another tab, are not done at first and turn done with no reload.
            gate = uuid.uuid4().hex
            archived = test_site.url(f"/gate?key={gate}&page=hostile-article.html")
            page.fill("#url", archived)
            page.click("form.archive button")
            home = context.new_page()
            home.goto(base + "/")
            loads: list[str] = []
            for watched in (page, home):
                watched.on("load", lambda loaded: loads.append(loaded.url))
                badges = watched.locator(".badges[data-task-id]").first
                expect(badges.locator(".badge")).to_have_count(len(ARCHIVERS))
                assert badges.get_attribute("data-live") is not None
                assert badges.locator(".badge.s-success").count() == 0
            item_url = page.url
            test_site.open_gate(gate)
            for watched in (page, home):
                badges = watched.locator(".badges[data-task-id]").first
                expect(badges.locator(".badge.s-success")).to_have_count(len(ARCHIVERS), timeout=180_000)
                expect(watched.locator(".badges[data-live]")).to_have_count(0)
            assert loads == [] and page.url == item_url
            home.close()

            # Open the item from the home page and read the reader view (the article, not the ad).
            page.goto(base + "/")
            page.click("ol.items h2 a")
            reader = page.locator(".reader")
            expect(reader).to_contain_text("largest remaining population of quokkas")
            expect(reader).not_to_contain_text("zanzibarwidget")
            assert page.locator(".reader script").count() == 0

            # The SingleFile copy: opened from htbase, its script runs nowhere near htbase's origin. A cookie
            # htbase's own pages can read (htbase's are HttpOnly) shows what the copy's script would see.
            context.add_cookies([{"name": "canary", "value": CANARY, "url": base}])
            assert CANARY in page.evaluate("() => document.cookie")
            with context.expect_page() as opened:
                page.click("text=SingleFile copy")
            copy = opened.value
            copy.wait_for_load_state()
            # What the page's script wrote while it was captured may be there; nothing it did here is.
            assert base not in copy.locator("#verdict").inner_text() and key not in copy.content()
            assert CANARY not in copy.content()
            assert '"tasks"' not in copy.locator("#api").inner_text()
            assert copy.evaluate("() => { try { return document.cookie } catch (e) { return 'refused' } }") == (
                "refused"
            )
            answered = copy.evaluate(
                "() => fetch('/api/v2/tasks', {credentials: 'include'}).then(r => r.status).catch(() => 'refused')"
            )
            assert answered == "refused"
            copy.close()

            # Search: a word of the article finds it; a word only the ad holds finds nothing.
            page.fill("#q", "quokkas")
            page.press("#q", "Enter")
            expect(page.locator("ol.items .snippet mark").first).to_have_text(re.compile("quokkas", re.I))
            expect(page.locator("ol.items h2")).to_have_text(["The Quokkas of Rottnest Island"])
            page.fill("#q", "zanzibarwidget")
            page.press("#q", "Enter")
            expect(page.locator("ol.items .empty")).to_have_text("Nothing found.")

            # Tag it, and filter by the tag.
            page.goto(base + "/")
            page.click("ol.items h2 a")
            page.fill("#tag", "Marsupials")
            page.click("form.add-tag button")
            expect(page.locator(".tag-list")).to_contain_text("marsupials")
            page.goto(base + "/")
            page.click("nav.tags a >> text=marsupials")
            expect(page.locator("h1")).to_contain_text("Tagged “marsupials”")
            expect(page.locator("ol.items h2")).to_have_text(["The Quokkas of Rottnest Island"])

            # Import bookmarks through the page: the one already archived is a duplicate, and the progress
            # page says so, with a link to it.
            page.goto(base + "/import")
            page.set_input_files(
                "#file",
                {
                    "name": "bookmarks.html",
                    "mimeType": "text/html",
                    "buffer": (
                        "<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><H3>Animals</H3>\n<DL><p>\n"
                        f'<DT><A HREF="{html.escape(archived)}">Quokkas</A>\n'
                        '<DT><A HREF="mailto:a@b.example">Mail</A>\n'
                        "</DL><p>\n</DL><p>\n"
                    ).encode(),
                },
            )
            page.click("form[action='/import'] button")
            expect(page.locator("h1")).to_have_text("Import of bookmarks.html")
            expect(page.locator(".progress")).to_contain_text("2 URLs")
            for outcome, count in {"queued": "0", "started": "0", "duplicate": "1", "invalid": "1"}.items():
                expect(page.locator(f"[data-count={outcome}]")).to_have_text(count)
            expect(page.locator("table.entries tbody td:nth-child(3)")).to_have_text(
                ["duplicate", re.compile("^invalid")]
            )
            page.click("table.entries a")
            expect(page.locator("article.item-page > h1")).to_have_text("The Quokkas of Rottnest Island")

            # The bookmarklet, run on another site's page, opens a confirmation holding that page's URL.
            item_url = page.url
            page.goto(base + "/")
            script = page.locator("text=Archive with htbase").get_attribute("href").removeprefix("javascript:")
            elsewhere = test_site.url("/article.html").replace("127.0.0.1", "localhost")  # another site
            page.goto(elsewhere)
            page.evaluate(script)  # what the bookmarks bar does: the link's script, run in the page
            expect(page.locator("main h1")).to_have_text("Archive this page?")
            expect(page.locator("#url")).to_have_value(elsewhere)
            page.goto(item_url)

            # Delete it, after a confirmation.
            page.click("text=Delete…")
            page.click("text=Delete for good")
            expect(page.locator("ol.items .empty")).to_contain_text("Nothing archived yet")
            page.fill("#q", "quokkas")
            page.press("#q", "Enter")
            expect(page.locator("ol.items .empty")).to_have_text("Nothing found.")
        finally:
            browser.close()


# The page over HTTP, on the quiet service (nothing is captured; captures are made in the ledger).


@pytest.fixture
def browser_session(service):
    """A browser signed in to the quiet service with an admin key: its client and its CSRF token."""
    _, key = ApiKeys(service.runtime.engine).create("browser", "admin")
    client = service.api.test_client()
    client.get("/sign-in")
    csrf = client.get_cookie("htbase_csrf").value
    assert client.post("/sign-in", data={"key": key, "csrf_token": csrf}).status_code == 303
    return client, csrf


def test_the_page_runs_under_a_strict_policy(browser_session):
    client, _ = browser_session
    for path in ("/", "/sign-in", "/import"):
        assert client.get(path).headers["Content-Security-Policy"] == (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ), path


def readability_capture(runtime, url: str, article_html: str) -> str:
    """A snapshot whose readability capture stored ``article_html``; its item."""
    created = runtime.ledger.create_task([NewItem(url, url_hash(url))], ["readability"])
    runtime.ledger.claim(created.task_id, "readability", "test")
    stored = runtime.store.put(f"{created.task_id}/readability.html", article_html.encode(), "text/html")
    runtime.ledger.complete(created.task_id, "readability", "test", stored, meta={"title": "T"}, duration_ms=1)
    return created.children[0]["item_id"]


def test_the_reader_view_keeps_the_articles_markup_and_nothing_that_runs(service):
    hostile = (
        "<html><head><script>alert('head')</script></head><body><nav>menu</nav><article>"
        '<h2 onclick="steal()">Quokkas</h2><p style="position:fixed">They <em>live</em> on '
        '<a href="javascript:fetch(\'/api/v2/tasks\')">an island</a> and <a href="https://ok.example/" '
        'onmouseover="steal()" target="_top">elsewhere</a>.</p>'
        '<img src="x" onerror="alert(document.cookie)"><script>alert(1)</script>'
        '<iframe src="https://evil.example/"></iframe><svg onload="alert(1)"></svg>'
        '<form action="https://evil.example/"><input name="key"></form><style>body{display:none}</style>'
        "</article></body></html>"
    )
    item = readability_capture(service.runtime, "https://a.example/", hostile)
    with service.api.test_request_context():
        reader = reader_view(service.runtime.catalog.snapshots(item)[0])
    assert reader == (
        '<h2>Quokkas</h2><p>They <em>live</em> on <a rel="noopener noreferrer nofollow">an island</a> and '
        '<a href="https://ok.example/" rel="noopener noreferrer nofollow">elsewhere</a>.</p>'
    )


def test_thumbnails_from_a_gcs_store_come_from_an_origin_the_page_admits(tmp_path):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 1024
    with FakeGcsServer() as gcs:
        gcs.create_bucket("thumbs")
        runtime = Runtime(
            Settings(
                database_url=f"sqlite:///{tmp_path / 'htbase.db'}",
                file_storage_provider="gcs",
                gcs_bucket="thumbs",
                storage_emulator_host=gcs.endpoint,
            )
        )
        migrate(runtime.engine)
        try:
            runtime.store = key_signing_store(runtime, gcs)
            task_id = finished(runtime, "screenshot", png, "image/png")
            client = create_app(runtime).test_client()
            home = client.get("/")
            thumbnail = re.search(r'<img class="thumb" src="([^"]+)"', home.text)[1]
            assert thumbnail == f"/api/v2/archives/{task_id}/screenshot"
            redirected = client.get(thumbnail)
            assert redirected.status_code == 302
            location = urlsplit(redirected.headers["Location"])
            policy = dict(d.strip().split(" ", 1) for d in home.headers["Content-Security-Policy"].split(";"))
            assert policy["img-src"] == f"'self' data: {location.scheme}://{location.netloc}"
            assert requests.get(redirected.headers["Location"], timeout=10).content == png
        finally:
            runtime.close()


def test_importing_bookmarks_through_the_page_shows_each_urls_progress(browser_session, service):
    client, csrf = browser_session
    bookmarks = (
        b"<!DOCTYPE NETSCAPE-Bookmark-file-1>\n<DL><p>\n<DT><H3>Reading</H3>\n<DL><p>\n"
        b'<DT><A HREF="https://a.example/one">One</A>\n<DT><A HREF="https://a.example/two">Two</A>\n'
        b'</DL><p>\n<DT><A HREF="ftp://nope.example/">Nope</A>\n</DL><p>\n'
    )

    def post(**fields):
        return client.post(
            "/import",
            data={"file": (io.BytesIO(bookmarks), "bookmarks.html"), **fields},
            content_type="multipart/form-data",
        )

    assert f'name="csrf_token" value="{csrf}"' in client.get("/import").text
    assert post().status_code == 400  # no CSRF token: nothing imported
    assert service.runtime.tags.counts() == []
    answer = post(csrf_token=csrf)
    assert answer.status_code == 303
    progress = client.get(answer.headers["Location"])
    assert re.fullmatch(r"/imports/[\w-]+", answer.headers["Location"]) and progress.status_code == 200
    assert "Import of bookmarks.html" in progress.text
    counts = dict(re.findall(r'<span data-count="(\w+)">(\d+)</span>', progress.text))
    assert counts == {"queued": "0", "started": "2", "duplicate": "0", "invalid": "1"}
    rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td><td>(.*?)</td></tr>", progress.text)
    items = {url: item for item, url in re.findall(r'<a href="/items/([^"]+)">([^<]+)</a>', progress.text)}
    assert [(n, outcome) for n, _, outcome in rows] == [("1", "started"), ("2", "started"), ("3", rows[2][2])]
    assert rows[2][2].startswith("invalid: ") and sorted(items) == ["https://a.example/one", "https://a.example/two"]
    assert service.runtime.tags.of(items["https://a.example/one"]) == ["reading"]
    assert client.get("/imports/nope").status_code == 404


def test_the_bookmarklet_opens_a_confirmation_that_only_a_posted_form_acts_on(browser_session, service):
    client, csrf = browser_session
    with service.api.test_request_context(base_url="https://htbase.example:8443/"):
        assert bookmarklet() == (
            "javascript:location.href='https://htbase.example:8443/save?url='+encodeURIComponent(location.href)"
        )
    assert 'href="javascript:location.href=&#39;http://localhost/save?url=&#39;' in client.get("/").text

    hostile = 'https://b.example/"><script>alert(1)</script>'
    confirm = client.get("/save", query_string={"url": hostile})
    assert confirm.status_code == 200 and "<script>alert(1)" not in confirm.text
    confirm = client.get("/save", query_string={"url": "https://b.example/read"})
    assert 'value="https://b.example/read"' in confirm.text and f'value="{csrf}"' in confirm.text
    assert service.runtime.catalog.page(limit=10, offset=0)[1] == 0  # a GET (another site's link) made nothing
    assert client.post("/archive", data={"url": "https://b.example/read"}).status_code == 400
    archived = client.post("/archive", data={"url": "https://b.example/read", "csrf_token": csrf})
    assert archived.status_code == 303
    [entry], _ = service.runtime.catalog.page(limit=10, offset=0)
    assert archived.headers["Location"] == f"/items/{entry.item_id}" and entry.url == "https://b.example/read"
    assert {a.status for a in entry.snapshot.artifacts} == {"pending"}

    stranger = service.api.test_client()  # signed out: to the sign-in page, and back to the confirmation after
    to_sign_in = stranger.get("/save", query_string={"url": "https://b.example/read"})
    assert to_sign_in.status_code == 302
    assert to_sign_in.headers["Location"] == "/sign-in?next=/save?url%3Dhttps://b.example/read"
    # Run on another site's page, the bookmarklet's request comes without the SameSite=Strict key cookie:
    # the page opens the same address again from htbase's own origin, where the browser sends it.
    from_elsewhere = stranger.get(
        "/save", query_string={"url": "https://b.example/read"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert from_elsewhere.status_code == 200
    assert '<meta http-equiv="refresh" content="0; url=/save?url=https://b.example/read">' in from_elsewhere.text


def test_failed_captures_are_listed_apart_and_retried(browser_session, service):
    client, csrf = browser_session
    runtime = service.runtime
    capture(runtime.ledger, runtime.store, "https://fine.example/", title="Fine")
    created = runtime.ledger.create_task(
        [NewItem("https://broken.example/", url_hash("https://broken.example/"))], ["pdf"]
    )
    runtime.ledger.claim(created.task_id, "pdf", "test")
    runtime.ledger.fail(created.task_id, "pdf", "test", "HTTP 503 from the site", permanent=True)
    broken = created.children[0]["item_id"]

    failed = client.get("/", query_string={"status": "failed"}).text
    assert re.findall(r'<h2><a href="/items/([^"]+)">', failed) == [broken]
    assert 'title="pdf: failed — HTTP 503 from the site"' in failed
    assert f'action="/items/{broken}/recapture"' in failed
    assert "recapture" not in client.get("/").text  # Retry is on the failed list only

    retried = client.post(f"/items/{broken}/recapture", data={"csrf_token": csrf, "next": "/?status=failed"})
    assert retried.status_code == 303 and retried.headers["Location"] == "/?status=failed"
    snapshots = runtime.catalog.snapshots(broken)
    assert len(snapshots) == 2 and {a.status for a in snapshots[0].artifacts} == {"pending"}
    assert sorted(a.archiver for a in snapshots[0].artifacts) == sorted(runtime.settings.archivers)
    assert re.findall(r'<h2><a href="/items/([^"]+)">', client.get("/?status=failed").text) == []


def test_the_item_page_lists_every_snapshot_and_acts_on_them(browser_session, service):
    client, csrf = browser_session
    runtime = service.runtime
    older = capture(runtime.ledger, runtime.store, "https://a.example/", item_id="page", body="old text on emus")
    newer = capture(runtime.ledger, runtime.store, "https://a.example/", item_id="page", body="new text on emus")
    Summaries(runtime.engine).save(
        newer,
        "k" * 64,
        status="success",
        model="m",
        prompt_version="1",
        result={"lede": "Emus.", "summary": "About emus.", "key_points": ["they run"], "tags": ["Birds", "emus"]},
    )
    runtime.tags.add("page", ["emus"])

    page = client.get("/items/page").text
    timeline = re.findall(r'<li( aria-current="true")?><a href="/items/page\?snapshot=([^"]+)">', page)
    assert timeline == [(' aria-current="true"', newer), ("", older)]
    assert f'href="/api/v2/archives/{newer}/all">Download all (zip)' in page
    assert re.findall(r'<li class="suggested">(\w+) ', page) == ["Birds"]  # emus is already a tag
    assert "<li>they run</li>" in page
    zipped = client.get(f"/api/v2/archives/{newer}/all")
    assert zipped.status_code == 200 and zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()
    assert f'href="/api/v2/archives/{older}/all"' in client.get(f"/items/page?snapshot={older}").text

    assert client.post("/items/page/recapture").status_code == 400  # no CSRF token
    assert len(runtime.catalog.snapshots("page")) == 2
    again = client.post("/items/page/recapture", data={"csrf_token": csrf})
    assert again.status_code == 303 and again.headers["Location"] == "/items/page"
    newest = runtime.catalog.snapshots("page")[0]
    assert newest.task_id not in (older, newer) and {a.status for a in newest.artifacts} == {"pending"}

    cancelled = client.post(f"/tasks/{newest.task_id}/cancel", data={"csrf_token": csrf, "next": "/items/page"})
    assert cancelled.status_code == 303 and cancelled.headers["Location"] == "/items/page"
    assert {a.status for a in runtime.ledger.task(newest.task_id).artifacts} == {"cancelled"}

    resummarized = client.post("/items/page/summarize", data={"csrf_token": csrf, "snapshot": older})
    assert resummarized.status_code == 303 and resummarized.headers["Location"] == f"/items/page?snapshot={older}"
    with runtime.ledger.session() as session:
        asked = [json.loads(m.data) for m in session.query(OutboxMessage).filter(OutboxMessage.topic == SUMMARIZE)]
    assert [(m["task_id"], m["force"]) for m in asked] == [(older, True)]
