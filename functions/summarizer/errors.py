"""What the summarizer raises, in one place.

Two outcomes matter to the push handler: ``RetryLater`` (answer 429 so the
delivery comes back later) and ``SummaryFailed`` (record it, keep the raw model
text for diagnosis). The rest describe one provider call or one model answer
and are handled inside the package.
"""

from __future__ import annotations


class SummarizerError(Exception):
    """Base of every error this package raises."""


class SummaryFailed(SummarizerError):
    """No summary could be made.

    ``transient`` is true when a provider was unreachable (a later delivery may
    succeed); false when retrying cannot help (no text, unusable model output).
    """

    def __init__(self, reason: str, raw_text: str = "", *, transient: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw_text = raw_text
        self.transient = transient


class RetryLater(SummarizerError):
    """Every usable provider is rate limited: ask again after ``retry_after_s``."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limited; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class SummaryValidationError(SummarizerError, ValueError):
    """A summary object breaks the schema; the message says which rule."""


class SummaryParseError(SummarizerError, ValueError):
    """Model text held no usable summary JSON, even after repair."""

    def __init__(self, raw_text: str, reason: str) -> None:
        super().__init__(reason)
        self.raw_text = raw_text
        self.reason = reason


class ProviderError(SummarizerError):
    """A provider call failed for a reason a retry will not fix (4xx, bad response)."""


class ProviderUnavailable(ProviderError):
    """Connection refused, timeout, 5xx, or the circuit breaker is open."""


class RateLimited(ProviderError):
    """HTTP 429, or the local rate limiter would have to wait too long."""

    def __init__(self, retry_after_s: float, message: str = "") -> None:
        super().__init__(message or f"rate limited; retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s
