"""Publishing what the outbox holds.

Writers publish their own rows right after their transaction commits; the
relay's flush picks up whatever is still unsent after a grace period (the
broker was down, the process died between commit and publish).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import Future
from typing import Protocol

from htbase.logs import log
from infra.outbox import Outbox, OutboxRow

logger = logging.getLogger("htbase.relay")


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        """Hand one message to the broker; ``topic`` is logical ("archive-pdf", "summarize").

        The future resolves to the message id once the broker has the message."""


class Relay:
    def __init__(self, outbox: Outbox, publisher: Publisher, timeout_s: float = 10.0) -> None:
        self.outbox = outbox
        self.publisher = publisher
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._confirmed: list[int] = []
        self._marking = False

    def send(self, rows: list[OutboxRow]) -> None:
        """Publish without waiting: a request answers as soon as its transaction commits.

        Rows are marked sent in batches as the broker confirms them; a row whose
        publish fails stays unsent for the next flush. If the process dies in
        between, the flush publishes it again, which idempotent handlers absorb.
        """
        for row in rows:
            try:
                future = self.publisher.publish(row.topic, row.data, row.attributes)
            except Exception as exc:
                self._keep(row, exc)
                continue
            future.add_done_callback(functools.partial(self._settled, row))

    def _settled(self, row: OutboxRow, future: Future) -> None:
        exc = future.exception()
        if exc is not None:
            self._keep(row, exc)
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

    def _keep(self, row: OutboxRow, exc: BaseException) -> None:
        log(logger, logging.WARNING, "publish failed; the outbox keeps the message",
            outbox_id=row.id, topic=row.topic, error=f"{type(exc).__name__}: {exc}")
        try:
            self.outbox.mark_unsent(row.id, f"{type(exc).__name__}: {exc}")
        except Exception:  # the database is down too: the row is unsent all the same
            logger.exception("could not record the publish failure")

    def publish_and_wait(self, rows: list[OutboxRow]) -> int:
        """Publish rows and mark those the broker took; the rest stay for the next flush."""
        pending: list[tuple[OutboxRow, Future | Exception]] = []
        for row in rows:  # hand over every message first, so they travel in one batch
            try:
                pending.append((row, self.publisher.publish(row.topic, row.data, row.attributes)))
            except Exception as exc:
                pending.append((row, exc))
        sent: list[int] = []
        for row, outcome in pending:
            try:
                if isinstance(outcome, Exception):
                    raise outcome
                outcome.result(timeout=self.timeout_s)
                sent.append(row.id)
            except Exception as exc:  # the broker is down or refused: keep the row, say why
                self._keep(row, exc)
        if sent:
            self.outbox.mark_sent(sent)
        return len(sent)

    def flush(self, min_age_s: float = 5.0) -> int:
        total = 0
        while rows := self.outbox.unsent(limit=200, min_age_s=min_age_s):
            published = self.publish_and_wait(rows)
            total += published
            if published < len(rows):
                break  # the broker is failing: try again on the next tick
        return total
