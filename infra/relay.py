"""Publishing what the outbox holds.

Writers publish their own rows right after their transaction commits; the
relay's flush picks up whatever is still unsent after a grace period (the
broker was down, the process died between commit and publish).

A message the broker can never take (too large, invalid) is failed with its
reason, and so is the work it announces, so that its task ends instead of
waiting forever; a message that failed for now is retried, and never holds up
the messages behind it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Protocol

from google.api_core.exceptions import InvalidArgument

from htbase.logs import log
from infra.outbox import Outbox, OutboxRow, announced_artifact
from infra.telemetry import end_publish, publishing

logger = logging.getLogger("htbase.relay")

# Pub/Sub takes at most 10 MB per message. Every broker here keeps that limit, so a
# message that could never go out in the cloud fails alike on a laptop.
MAX_MESSAGE_BYTES = 10_000_000


class MessageTooLarge(ValueError):
    pass


def undeliverable(exc: BaseException) -> bool:
    """Whether the broker refused the message itself (it never will take it) rather than
    failed for the moment (an outage). The Pub/Sub client raises ValueError for a message
    over its limit and TypeError for a malformed one; the server answers InvalidArgument."""
    return isinstance(exc, (ValueError, TypeError, InvalidArgument))


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        """Hand one message to the broker; ``topic`` is logical ("archive-pdf", "summarize").

        The future resolves to the message id once the broker has the message."""

    def ready(self) -> None:
        """Raise unless a publish could go out now (readiness reports it)."""


# Fails the artifact (task_id, archiver) that an unpublishable message announced, with a reason.
FailArtifact = Callable[[str, str, str], object]


class Relay:
    def __init__(
        self, outbox: Outbox, publisher: Publisher, *, fail_artifact: FailArtifact, timeout_s: float = 10.0
    ) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.fail_artifact = fail_artifact
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._confirmed: list[int] = []
        self._marking = False

    def _publish(self, row: OutboxRow) -> Future:
        size = len(row.data) + sum(len(k) + len(v) for k, v in row.attributes.items())
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(f"the message has {size} bytes; a broker takes at most {MAX_MESSAGE_BYTES}")
        # The publish continues the trace the row was written in; its receiver continues the publish.
        span, attributes = publishing(row.topic, row.attributes)
        try:
            future = self.publisher.publish(row.topic, row.data, attributes)
        except Exception as exc:
            end_publish(span, exc)
            raise
        future.add_done_callback(lambda done: end_publish(span, done.exception()))
        return future

    def send(self, rows: list[OutboxRow]) -> None:
        """Publish without waiting: a request answers as soon as its transaction commits.

        Rows are marked sent in batches as the broker confirms them; a row whose
        publish fails stays unsent for the next flush. If the process dies in
        between, the flush publishes it again, which idempotent handlers absorb.
        """
        for row in rows:
            try:
                future = self._publish(row)
            except Exception as exc:
                self._failed(row, exc)
                continue
            future.add_done_callback(functools.partial(self._settled, row))

    def _settled(self, row: OutboxRow, future: Future) -> None:
        exc = future.exception()
        if exc is not None:
            self._failed(row, exc)
            return
        with self._lock:
            self._confirmed.append(row.id)
            start, self._marking = not self._marking, True
        if start:
            threading.Thread(target=self._mark_confirmed, name="outbox-marker", daemon=True).start()

    def _mark_confirmed(self) -> None:
        """Mark confirmed rows sent, a batch at a time, until none are left; then end."""
        while True:
            time.sleep(0.05)  # gather the confirmations of concurrent requests into one UPDATE
            with self._lock:
                ids, self._confirmed = self._confirmed, []
                if not ids:
                    self._marking = False
                    return
            try:
                self.outbox.mark_sent(ids)
            except Exception as exc:  # left unsent: the next flush publishes them again
                log(logger, logging.WARNING, "could not mark messages sent", count=len(ids), error=str(exc))

    def _failed(self, row: OutboxRow, exc: BaseException) -> bool:
        """Record a failed publish; True when the row stays for another try."""
        error, final = f"{type(exc).__name__}: {exc}", undeliverable(exc)
        try:
            self.outbox.record_failure(row.id, error, final=final)
            if final and (artifact := announced_artifact(row)):
                self.fail_artifact(*artifact, f"the archive request could not be published: {error}")
        except Exception:  # the database is down too: the row is unsent all the same
            logger.exception("could not record the publish failure")
        level, message = (
            (logging.ERROR, "the broker refused the message for good; it and its work are failed")
            if final
            else (logging.WARNING, "publish failed; the outbox keeps the message")
        )
        log(logger, level, message, outbox_id=row.id, topic=row.topic, error=error)
        return not final

    def publish_and_wait(self, rows: list[OutboxRow]) -> tuple[int, int]:
        """Publish rows and mark those the broker took. Returns how many were sent and how
        many stay for the next flush (the rest were refused for good)."""
        pending: list[tuple[OutboxRow, Future | Exception]] = []
        for row in rows:  # hand over every message first, so they travel at the same time
            try:
                pending.append((row, self._publish(row)))
            except Exception as exc:
                pending.append((row, exc))
        sent: list[int] = []
        kept = 0
        for row, outcome in pending:
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                outcome.result(timeout=self.timeout_s)
                sent.append(row.id)
            except Exception as exc:  # the broker is down or refused: say why
                kept += self._failed(row, exc)
        if sent:
            self.outbox.mark_sent(sent)
        return len(sent), kept

    def flush(self, min_age_s: float = 5.0) -> int:
        """Publish everything unsent, oldest first, a batch at a time. A row that fails is
        passed over, so it never holds up the rows behind it; only a batch of which every
        row stays unsent ends the flush early: the broker is down, try on the next tick."""
        total, after = 0, 0
        while rows := self.outbox.unsent(limit=200, min_age_s=min_age_s, after_id=after):
            sent, kept = self.publish_and_wait(rows)
            total += sent
            if kept == len(rows):
                break
            after = rows[-1].id
        return total
