"""Publishing to Google Pub/Sub (or its emulator): one topic per archiver, one for summaries.

``publish`` returns a future at once, so one request's five messages travel
at the same time, each in a publish request of its own. After a failure (but
not the refusal of one message) the publisher stays "down" for a few seconds
and refuses at once, so that while the broker is out the API still answers 202
quickly: the outbox keeps every message and the relay republishes when the
broker is back.
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import Future

import google.cloud.pubsub_v1 as pubsub_v1
from google.api_core import retry as retries
from google.api_core.exceptions import PermissionDenied

from htbase.config import Settings
from htbase.topology import SUMMARIZE, topic_name
from infra.relay import undeliverable


class BrokerUnavailable(RuntimeError):
    pass


def emulator_transports(host: str):
    """gRPC transports (publisher, subscriber) for the Pub/Sub emulator at ``host`` ("HOST:PORT"),
    sharing one plaintext channel: the emulator has no TLS and takes no credentials."""
    import grpc
    from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(host)
    return PublisherGrpcTransport(channel=channel), SubscriberGrpcTransport(channel=channel)


def publisher_client(settings: Settings) -> pubsub_v1.PublisherClient:
    # One message per publish request: Pub/Sub refuses a request as a whole, so a message it can never
    # take would fail every message batched with it. (A task's messages go to different topics, which
    # never share a request anyway.)
    batching = pubsub_v1.types.BatchSettings(max_messages=1)
    if settings.pubsub_emulator_host:
        transport, _ = emulator_transports(settings.pubsub_emulator_host)
        return pubsub_v1.PublisherClient(transport=transport, batch_settings=batching)
    return pubsub_v1.PublisherClient(batch_settings=batching)


class PubSubPublisher:
    def __init__(
        self,
        settings: Settings,
        client: pubsub_v1.PublisherClient | None = None,
        *,
        timeout_s: float = 5.0,
        cooldown_s: float = 3.0,
    ) -> None:
        self.client = client or publisher_client(settings)
        self.project, self.prefix = settings.pubsub_project_id, settings.topic_prefix
        self.timeout_s, self.cooldown_s = timeout_s, cooldown_s
        # Bounded client-side retries: an outage must surface within timeout_s, not after a minute.
        self._retry = retries.Retry(initial=0.1, maximum=1.0, timeout=timeout_s)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def topic_path(self, topic: str) -> str:
        return self.client.topic_path(self.project, topic_name(self.prefix, topic))

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        if time.monotonic() < self._down_until:
            raise BrokerUnavailable("Pub/Sub failed moments ago; the outbox keeps the message")
        future = self.client.publish(
            self.topic_path(topic), data, retry=self._retry, timeout=self.timeout_s, **attributes
        )
        future.add_done_callback(self._watch)
        return future

    def ready(self) -> None:
        """Raise unless a publish could go out now: no failure moments ago, and the broker answers a
        question about a topic (a refusal to say counts: the broker answered, and knew who asked)."""
        if time.monotonic() < self._down_until:
            raise BrokerUnavailable("a publish failed moments ago")
        with contextlib.suppress(PermissionDenied):  # a publisher may not read topics
            self.client.api.get_topic(
                topic=self.topic_path(SUMMARIZE),
                timeout=self.timeout_s,
                retry=retries.Retry(initial=0.1, maximum=0.5, timeout=self.timeout_s),
            )

    def _watch(self, future: Future) -> None:
        exc = future.exception()
        if exc is not None and not undeliverable(exc):  # a refused message says nothing of the broker
            with self._lock:
                self._down_until = time.monotonic() + self.cooldown_s
