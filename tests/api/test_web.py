"""The web page in Chromium, against the all-in-one service capturing a page of the local test site for real:
sign in, archive from the box and watch the badges turn done without a reload, read the item, open the
SingleFile copy (its script reaches neither the cookie nor the API), search, tag, delete."""

from __future__ import annotations

import re
import threading

import pytest
from playwright.sync_api import expect, sync_playwright
from werkzeug.serving import make_server

from infra.keys import ApiKeys
from service.embedded import EmbeddedService

ARCHIVERS = ("singlefile", "readability", "screenshot")


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

            # Archive from the box: the item page's badges turn done with no reload.
            page.fill("#url", test_site.url("/hostile-article.html"))
            page.click("form.archive button")
            expect(page.locator(".badges[data-task-id] .badge").first).to_be_visible()
            item_url = page.url
            loads: list[str] = []
            page.on("load", lambda: loads.append(page.url))
            badges = page.locator("section[aria-labelledby=formats] .badge")
            expect(badges).to_have_count(len(ARCHIVERS))
            expect(page.locator("section[aria-labelledby=formats] .badge.s-success")).to_have_count(
                len(ARCHIVERS), timeout=180_000
            )
            assert loads == [] and page.url == item_url

            # Open the item from the home page and read the reader view (the article, not the ad).
            page.goto(base + "/")
            page.click("ol.items h2 a")
            reader = page.locator(".reader")
            expect(reader).to_contain_text("largest remaining population of quokkas")
            expect(reader).not_to_contain_text("zanzibarwidget")
            assert page.locator(".reader script").count() == 0

            # The SingleFile copy: opened from htbase, its script runs nowhere near htbase's origin.
            with context.expect_page() as opened:
                page.click("text=SingleFile copy")
            copy = opened.value
            copy.wait_for_load_state()
            # What the page's script wrote while it was captured may be there; nothing it did here is.
            assert base not in copy.locator("#verdict").inner_text() and key not in copy.content()
            assert '"tasks"' not in copy.locator("#api").inner_text()
            assert copy.evaluate("() => { try { return document.cookie } catch (e) { return 'refused' } }") in (
                "refused",
                "",
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

            # Delete it, after a confirmation.
            page.click("ol.items h2 a")
            page.click("text=Delete…")
            page.click("text=Delete for good")
            expect(page.locator("ol.items .empty")).to_contain_text("Nothing archived yet")
            page.fill("#q", "quokkas")
            page.press("#q", "Enter")
            expect(page.locator("ol.items .empty")).to_have_text("Nothing found.")
        finally:
            browser.close()
