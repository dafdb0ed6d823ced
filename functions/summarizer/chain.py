"""Providers in a fallback chain, each behind a circuit breaker and a rate limiter.

A chain step is anything that turns an article into a ``Summary``: an LLM
provider wrapped by ``LLMSummarizer`` (pipeline.py) or the offline
``ExtractiveSummarizer``, which needs no JSON and no network. Steps are tried in
``LLM_PROVIDER`` order.

Rate limits: a 429 is not a failure. When an LLM step is rate limited, later LLM
steps are still tried, but an offline step is not: its summary would be cached
as the article's summary for good, while the rate limit will pass in seconds.
The chain raises ``RetryLater`` instead, so the push is redelivered. On the last
delivery attempt the handler passes ``may_retry_later=False`` and takes the
offline summary rather than none.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from functions.summarizer.errors import ProviderError, ProviderUnavailable, RateLimited, RetryLater, SummaryFailed
from functions.summarizer.prompts import Message
from functions.summarizer.providers import Completion, Provider
from functions.summarizer.schema import Summary
from htbase.logs import log
from infra.telemetry import TRACER

logger = logging.getLogger("htbase.summarizer")

# Longer local waits are handed back as RateLimited: a blocked delivery holds a
# worker, a redelivered one does not.
MAX_LOCAL_WAIT_S = 30.0
# A 429 asking for a short pause is waited out in place (bounded), not bounced.
INLINE_RATE_LIMIT_RETRIES = 2


class Step(Protocol):
    name: str
    model_id: str
    prompt_version: str
    offline: bool

    def summarize(self, text: str, title: str, language: str) -> Summary: ...


class RateLimiter:
    """At most ``per_minute`` requests, evenly spaced, for every thread sharing this object.

    Spacing (rather than a burst allowance) keeps concurrent deliveries from
    all hitting the provider in the same second.
    """

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def acquire(self, max_wait_s: float) -> None:
        """Take the next slot, sleeping up to ``max_wait_s``; ``RateLimited`` if it is further off."""
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            wait = start - now
            if wait > max_wait_s:
                raise RateLimited(wait, f"local rate limit: next request slot in {wait:.1f}s")
            self._next = start + self._interval
        if wait > 0:
            self._sleep(wait)

    def hold(self, seconds: float) -> None:
        """The provider said 429: no request from this process before ``seconds`` have passed."""
        with self._lock:
            self._next = max(self._next, self._clock() + seconds)


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; after ``cooldown_s`` let one trial call through."""

    def __init__(self, threshold: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold, self._cooldown, self._clock = threshold, cooldown_s, clock
        self._failures = 0
        self._open_until = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            if self._threshold <= 0 or self._failures < self._threshold:
                return True
            now = self._clock()
            if now < self._open_until:
                return False
            self._open_until = now + self._cooldown  # half-open: this caller is the trial, others wait
            return True

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._threshold > 0 and self._failures >= self._threshold:
                self._open_until = self._clock() + self._cooldown

    @property
    def is_open(self) -> bool:
        with self._lock:
            return 0 < self._threshold <= self._failures and self._clock() < self._open_until


class GuardedProvider:
    """A provider that is skipped while its breaker is open and never exceeds its rate."""

    def __init__(
        self, provider: Provider, limiter: RateLimiter, breaker: CircuitBreaker, max_wait_s: float = MAX_LOCAL_WAIT_S
    ) -> None:
        self.name, self.model_id = provider.name, provider.model_id
        self.provider, self.limiter, self.breaker = provider, limiter, breaker
        self._max_wait = max_wait_s

    def complete(self, messages: list[Message], max_tokens: int) -> Completion:
        pauses = 0
        while True:
            if not self.breaker.allow():
                raise ProviderUnavailable(f"{self.name}: circuit open after repeated failures")
            self.limiter.acquire(self._max_wait)
            try:
                completion = self.provider.complete(messages, max_tokens)
            except RateLimited as exc:
                self.limiter.hold(exc.retry_after_s)
                pauses += 1
                if pauses > INLINE_RATE_LIMIT_RETRIES or exc.retry_after_s > self._max_wait:
                    raise
                continue  # the next acquire() sleeps out the pause
            except ProviderError:
                self.breaker.record_failure()
                raise
            self.breaker.record_success()
            return completion


class Chain:
    def __init__(self, steps: Sequence[Step]) -> None:
        if not steps:
            raise ValueError("a chain needs at least one step")
        self.steps = list(steps)

    def summarize(self, text: str, title: str = "", language: str = "", *, may_retry_later: bool = True) -> Summary:
        reasons: list[str] = []
        raw_text, retry_after, transient = "", None, False
        for step in self.steps:
            if retry_after is not None and step.offline and may_retry_later:
                reasons.append(f"{step.name}: skipped while an LLM provider is rate limited")
                continue
            try:
                with TRACER.start_as_current_span(f"summarize with {step.name}", attributes={"provider": step.name}):
                    summary = step.summarize(text, title, language)
            except RateLimited as exc:
                retry_after = exc.retry_after_s if retry_after is None else min(retry_after, exc.retry_after_s)
                reasons.append(f"{step.name}: {exc}")
            except ProviderUnavailable as exc:
                transient = True
                reasons.append(f"{step.name}: {exc}")
            except ProviderError as exc:
                reasons.append(f"{step.name}: {exc}")
            except SummaryFailed as exc:
                transient = transient or exc.transient
                raw_text = exc.raw_text or raw_text
                reasons.append(f"{step.name}: {exc.reason}")
            else:
                if reasons:
                    log(
                        logger,
                        logging.WARNING,
                        "summary made by a fallback provider",
                        provider=step.name,
                        failures="; ".join(reasons),
                    )
                return summary
        if retry_after is not None and may_retry_later:
            raise RetryLater(retry_after)
        raise SummaryFailed("; ".join(reasons), raw_text, transient=transient or retry_after is not None)
