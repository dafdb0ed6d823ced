"""Deliveries: what one push does, start to finish (``archive``: a capture; ``summary``: a summary).

Each takes the message and the worker and says what the push handler answers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """What a push handler answers: ack (2xx) or ask for redelivery (5xx, or 429 after a delay)."""

    ack: bool
    reason: str
    retry_after_s: float | None = None
