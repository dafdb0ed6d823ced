"""Every metric htbase records, declared once (OpenTelemetry instruments; infra/telemetry.py exports them).

Names are dotted as OpenTelemetry has them; Prometheus shows them with
underscores and a unit suffix (``htbase.captures`` is ``htbase_captures_total``),
Cloud Monitoring as ``workload.googleapis.com/htbase.captures``. Attributes stay
few and bounded (an archiver, an outcome, an error kind, a route), never ids.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from htbase.messages import PushMessage
from htbase.topology import DEAD_LETTER_PATH
from infra.models import utcnow

METER = metrics.get_meter("htbase")
SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 300, 600)
BYTES = (1e3, 1e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7, 1e8)

SUBMISSIONS = METER.create_counter(
    "htbase.submissions", unit="{task}", description="tasks accepted, by kind (single, batch)"
)
CAPTURES = METER.create_counter(
    "htbase.captures",
    unit="{capture}",
    description="capture attempts by archiver and outcome (success, failed: for good, retried), "
    "with the error kind of a failure",
)
CAPTURE_DURATION = METER.create_histogram(
    "htbase.capture.duration",
    unit="s",
    description="capture attempts' time, claim to record, by archiver",
    explicit_bucket_boundaries_advisory=SECONDS,
)
CAPTURE_SIZE = METER.create_histogram(
    "htbase.capture.size",
    unit="By",
    description="stored artifacts' size by archiver",
    explicit_bucket_boundaries_advisory=BYTES,
)
DELIVERIES = METER.create_counter(
    "htbase.push.deliveries",
    unit="{delivery}",
    description="push deliveries by route and answer (ack, retry, refused, unavailable)",
)
REDELIVERIES = METER.create_counter(
    "htbase.push.redeliveries",
    unit="{delivery}",
    description="push deliveries of a message already delivered before, by route",
)
DEAD_LETTERS = METER.create_counter(
    "htbase.dead_letters",
    unit="{message}",
    description="messages that exhausted their deliveries, by the subscription they came from",
)
LEASE_TAKEOVERS = METER.create_counter(
    "htbase.lease.takeovers",
    unit="{lease}",
    description="capture leases that expired while held, by archiver and who noticed (sweeper, holder)",
)
SUMMARIES = METER.create_counter(
    "htbase.summaries", unit="{summary}", description="summaries by provider and outcome (success, failed, retry)"
)
SUMMARY_TOKENS = METER.create_counter(
    "htbase.summary.tokens", unit="{token}", description="model tokens by provider and direction (in, out)"
)
SUMMARY_DURATION = METER.create_histogram(
    "htbase.summary.duration",
    unit="s",
    description="time to make a summary, by provider",
    explicit_bucket_boundaries_advisory=SECONDS,
)
WEBHOOK_DELIVERIES = METER.create_counter(
    "htbase.webhook.deliveries", unit="{delivery}", description="webhook deliveries by outcome"
)
HTTP_DURATION = METER.create_histogram(
    "htbase.http.server.duration",
    unit="s",
    description="API requests' time by method, route and status class (2xx, 4xx, 5xx)",
    explicit_bucket_boundaries_advisory=SECONDS,
)

# (how many, the oldest one's time) of a backlog that lives in the ledger
Backlog = tuple[int, datetime | None]
BACKLOG_CACHE_S = 15.0  # a scrape or an export reads the ledger at most this often


class _Backlogs:
    """The ledger backlogs the gauges report: read when collected, each at most once per cache period."""

    def __init__(self) -> None:
        self._readers: dict[str, Callable[[], Backlog]] = {}
        self._cached: dict[str, tuple[float, Backlog | None]] = {}
        self._lock = threading.Lock()

    def watch(self, name: str, read: Callable[[], Backlog]) -> None:
        with self._lock:
            self._readers[name] = read
            self._cached.pop(name, None)

    def read(self, name: str) -> Backlog | None:
        """None when nothing is watched or the ledger did not answer (the gauge then reports nothing)."""
        with self._lock:
            reader, (when, value) = self._readers.get(name), self._cached.get(name, (-BACKLOG_CACHE_S, None))
            if reader is None or time.monotonic() - when < BACKLOG_CACHE_S:
                return value
            try:
                value = reader()
            except Exception:  # the ledger is down: no point rather than a wrong one
                value = None
            self._cached[name] = (time.monotonic(), value)
            return value

    def depth(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            value = self.read(name)
            return [] if value is None else [Observation(value[0])]

        return observe

    def oldest_age(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            value = self.read(name)
            if value is None:
                return []
            oldest = value[1]
            return [Observation(0.0 if oldest is None else max(0.0, (utcnow() - oldest).total_seconds()))]

        return observe


BACKLOGS = _Backlogs()
METER.create_observable_gauge(
    "htbase.outbox.depth", [BACKLOGS.depth("outbox")], unit="{message}", description="outbox messages not yet published"
)
METER.create_observable_gauge(
    "htbase.outbox.oldest_age",
    [BACKLOGS.oldest_age("outbox")],
    unit="s",
    description="age of the oldest outbox message not yet published (0: none)",
)
METER.create_observable_gauge(
    "htbase.replica.pending",
    [BACKLOGS.depth("replica")],
    unit="{task}",
    description="tasks whose Firestore documents are behind the ledger",
)
METER.create_observable_gauge(
    "htbase.replica.lag",
    [BACKLOGS.oldest_age("replica")],
    unit="s",
    description="how long the longest-behind Firestore document has been behind (0: none)",
)


def watch_backlogs(outbox: Callable[[], Backlog], replica: Callable[[], Backlog]) -> None:
    """Report these backlogs from this process: one that keeps them (housekeeping) is enough."""
    BACKLOGS.watch("outbox", outbox)
    BACKLOGS.watch("replica", replica)


def error_kind(exc: BaseException) -> str:
    """A failure's kind for a metric attribute: its class, a bounded set."""
    return type(exc).__name__


def record_delivery(path: str, message: PushMessage, status: int) -> None:
    """A push answered: ack (2xx), retry (429, 5xx) or refused (any other 4xx)."""
    answer = "ack" if status < 300 else "retry" if status == 429 or status >= 500 else "refused"
    DELIVERIES.add(1, {"route": path, "answer": answer})
    if (message.delivery_attempt or 1) > 1:
        REDELIVERIES.add(1, {"route": path})
    if path == DEAD_LETTER_PATH:
        source = message.attributes.get("CloudPubSubDeadLetterSourceSubscription", "unknown")
        DEAD_LETTERS.add(1, {"subscription": source.rsplit("/", 1)[-1]})
