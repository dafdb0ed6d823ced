"""The contract every archiver keeps: a URL and options in, one capture out.

An archiver raises ``PermanentCaptureError`` for what a retry cannot fix (bad
URL, refused address, 4xx page, page too large) and ``TransientCaptureError``
for what might work next time (timeouts, 5xx, 429, a tool that flaked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from htbase.urls import InvalidURL, validate_url


class CaptureError(Exception):
    permanent = False


class PermanentCaptureError(CaptureError):
    permanent = True


class TransientCaptureError(CaptureError):
    permanent = False


class CaptureTimeout(TransientCaptureError):
    """The page did not load (or render) in time: worth ``attempts_worth``
    tries in all, no more; the same page under the same limit seldom makes it."""

    attempts_worth = 2


@dataclass(frozen=True)
class Capture:
    data: bytes
    content_type: str
    extension: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Secondary files stored beside the main one: {extension: (bytes, content type)}.
    extras: dict[str, tuple[bytes, str]] = field(default_factory=dict)


class Archiver(Protocol):
    name: str

    def capture(self, url: str, options: dict[str, Any], task_id: str = "") -> Capture:
        """``task_id``: the task it is for, so that the captures of one task may share a page load."""
        ...


# --- checks every archiver shares -------------------------------------------------


def capture_timeout(settings, options: Mapping[str, Any]) -> float:
    """Seconds a capture may take: ``options["timeout"]`` if given, else the setting; never more
    than MAX_CAPTURE_TIMEOUT, whatever a message asks, so the push answers within its ack deadline."""
    value = options.get("timeout") if options else None
    if value is None:
        return float(settings.capture_timeout_s)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise PermanentCaptureError(f"option 'timeout' must be a positive number of seconds, got {value!r}")
    return min(float(value), settings.max_capture_timeout_s)


def check_url(url: str) -> str:
    """Only http(s) URLs: never let a tool open file:// or chrome:// pages. Returns the normalized URL."""
    try:
        return validate_url(url)
    except InvalidURL as exc:
        raise PermanentCaptureError(str(exc)) from None


# The 4xx answers a site may not give next time: the rest of 4xx stands.
TRANSIENT_HTTP_STATUSES = frozenset({408, 425, 429})


def http_failure(status: int, message: str) -> CaptureError:
    """The capture error for an HTTP error ``status``: transient for 5xx and
    408, 425, 429 (a timeout, too early, too many requests), else permanent."""
    if status >= 500 or status in TRANSIENT_HTTP_STATUSES:
        return TransientCaptureError(message)
    return PermanentCaptureError(message)


def check_size(what: str, size: int, limit: int) -> None:
    if size > limit:
        raise PermanentCaptureError(f"{what} is {size} bytes, over the limit of {limit}")
