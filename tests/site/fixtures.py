"""Pytest plugin (registered in tests/conftest.py): the local test site, one per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.site.server import TestSite, serve_test_site


@pytest.fixture(scope="session")
def test_site() -> Iterator[TestSite]:
    with serve_test_site() as site:
        yield site
