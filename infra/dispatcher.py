"""The embedded stand-in for Pub/Sub push subscriptions.

It builds exactly the envelope Pub/Sub would and POSTs it to exactly the push
handlers Cloud Run runs (the same WSGI app, in process), on a bounded pool of
worker threads. Like a push subscription, it redelivers on 5xx/429 with
exponential backoff and, after ``max_attempts``, hands the message to the
dead-letter handler. A 4xx answer means the message can never succeed, so it
goes to the dead-letter handler at once. A message with a ``schedule_time``
waits until then, as a scheduled Cloud Tasks task does.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from flask import Flask

from htbase.logs import log
from htbase.messages import build_push_envelope
from htbase.topology import DEAD_LETTER
from infra.outbox import schedule_time

logger = logging.getLogger("htbase.dispatcher")


class LocalPushDispatcher:
    def __init__(
        self,
        push_app: Flask,
        routes: dict[str, str],
        *,
        workers: int,
        max_attempts: int,
        backoff_s: float,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.push_app = push_app
        self.routes = routes  # logical topic -> push path, plus DEAD_LETTER -> path
        self.max_attempts = max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="push")
        self._lock = threading.Condition()
        self._in_flight = 0
        self._closed = False

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        if topic not in self.routes:
            raise ValueError(f"no push subscription for topic {topic!r}")
        if self._closed:
            raise RuntimeError("dispatcher is shut down")
        message_id = uuid.uuid4().hex
        due = schedule_time(attributes)
        delay = (due - datetime.now(UTC)).total_seconds() if due else 0.0
        if delay > 0:  # held back until its time, as Cloud Tasks holds a scheduled task
            self._later(delay, topic, data, dict(attributes), message_id, 1)
        else:
            self._submit(topic, data, dict(attributes), message_id, 1)
        accepted: Future = Future()
        accepted.set_result(message_id)  # held in memory now, as a broker would hold it
        return accepted

    def _submit(self, topic: str, data: bytes, attributes: dict[str, str], message_id: str, attempt: int) -> None:
        with self._lock:
            self._in_flight += 1
        self.pool.submit(self._deliver, topic, data, attributes, message_id, attempt)

    def _deliver(self, topic: str, data: bytes, attributes: dict[str, str], message_id: str, attempt: int) -> None:
        try:
            status = self._post(self.routes[topic], data, attributes, message_id, topic, attempt)
            if status < 300:
                return
            if (status >= 500 or status == 429) and attempt < self.max_attempts:
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                log(
                    logger,
                    logging.INFO,
                    "push nacked; will redeliver",
                    topic=topic,
                    status=status,
                    attempt=attempt,
                    delay_s=delay,
                )
                self._later(delay, topic, data, attributes, message_id, attempt + 1)
                return
            if topic != DEAD_LETTER:
                log(
                    logger,
                    logging.WARNING,
                    "push failed for good; dead-lettering",
                    topic=topic,
                    status=status,
                    attempts=attempt,
                )
                dead = dict(
                    attributes,
                    CloudPubSubDeadLetterSourceDeliveryCount=str(attempt),
                    CloudPubSubDeadLetterSourceSubscription=topic,
                )
                self._submit(DEAD_LETTER, data, dead, message_id, 1)
        except Exception:
            logger.exception("push delivery crashed (topic %s)", topic)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._lock.notify_all()

    def _later(self, delay: float, *args) -> None:
        with self._lock:
            self._in_flight += 1  # a scheduled redelivery is still in flight

        def fire() -> None:
            with self._lock:
                self._in_flight -= 1
            if not self._closed:
                self._submit(*args)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        timer.start()

    def _post(
        self, path: str, data: bytes, attributes: dict[str, str], message_id: str, topic: str, attempt: int
    ) -> int:
        # deliveryAttempt as Pub/Sub sends it on subscriptions with a dead-letter policy.
        envelope = build_push_envelope(
            data,
            attributes,
            message_id=message_id,
            delivery_attempt=attempt,
            subscription=f"projects/local/subscriptions/{topic}",
        )
        with self.push_app.test_client() as client:
            response = client.post(path, data=json.dumps(envelope), content_type="application/json")
        return response.status_code

    def ready(self) -> None:
        """Raise once the dispatcher is shut down: nothing published then would be delivered."""
        if self._closed:
            raise RuntimeError("dispatcher is shut down")

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is queued, running or waiting for redelivery."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def close(self) -> None:
        self._closed = True
        self.pool.shutdown(wait=True, cancel_futures=False)
