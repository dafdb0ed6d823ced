"""The contract every archiver keeps: a URL and options in, one capture out.

An archiver raises ``PermanentCaptureError`` for what a retry cannot fix (bad
URL, refused address, 4xx page, page too large) and ``TransientCaptureError``
for what might work next time (timeouts, 5xx, a tool that flaked).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class CaptureError(Exception):
    permanent = False


class PermanentCaptureError(CaptureError):
    permanent = True


class TransientCaptureError(CaptureError):
    permanent = False


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

    def capture(self, url: str, options: dict[str, Any]) -> Capture:
        ...
