"""The checks every archiver shares: one answer to "is this HTTP error worth a retry?"."""

from __future__ import annotations

import pytest

from functions.archivers.base import CaptureError, PermanentCaptureError, TransientCaptureError, http_failure
from functions.archivers.browser import check_response

TRANSIENT = [408, 425, 429, 500, 502, 503, 504, 599]
PERMANENT = [400, 401, 403, 404, 410, 451, 499]


@pytest.mark.parametrize("status", TRANSIENT + PERMANENT)
def test_http_failure_is_transient_for_5xx_and_408_425_429(status):
    error = http_failure(status, f"HTTP {status} for http://example.org/")
    assert type(error) is (TransientCaptureError if status in TRANSIENT else PermanentCaptureError)
    assert str(error) == f"HTTP {status} for http://example.org/"


@pytest.mark.parametrize("status", TRANSIENT + PERMANENT)
def test_browser_archivers_judge_a_status_the_same_way(status):
    with pytest.raises(CaptureError) as raised:
        check_response("http://example.org/", status, "", {}, 1_000_000)
    assert type(raised.value) is type(http_failure(status, ""))
