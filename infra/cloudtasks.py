"""Publishing to Cloud Tasks (or its emulator): a message of a queue's topic becomes an HTTP task.

The task POSTs the same push envelope Pub/Sub would to the queue's route on our own service
(``htbase.topology.QUEUES``), which runs the delivery: the receiver is never Cloud Tasks' own
target, so the egress guard and the signing run in our code. In the cloud the task carries an OIDC
token (``TASKS_SERVICE_ACCOUNT`` for ``PUSH_AUDIENCE``); the emulator sends none, so the URL carries
the shared push token instead. A task is named after the message's ``key``: the relay republishing
a message it could not mark sent makes no second task. ``schedule_time`` holds a task back.

``TopicRouter`` sends each logical topic to its broker: queues here, everything else to Pub/Sub.
"""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from htbase.config import Settings
from htbase.messages import build_push_envelope
from htbase.topology import WEBHOOKS, queue
from infra.outbox import schedule_time
from infra.relay import Publisher

if TYPE_CHECKING:
    from google.cloud.tasks_v2 import CloudTasksClient


def tasks_client(settings: Settings) -> CloudTasksClient:
    # Imported here: the library takes a while to load, and most processes publish no task.
    from google.cloud.tasks_v2 import CloudTasksClient

    if not settings.cloud_tasks_emulator_host:
        return CloudTasksClient()
    import grpc
    from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

    channel = grpc.insecure_channel(settings.cloud_tasks_emulator_host)
    return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


class CloudTasksPublisher:
    def __init__(self, settings: Settings, client: CloudTasksClient | None = None, *, timeout_s: float = 10.0) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self.project = settings.google_cloud_project or settings.pubsub_project_id
        self._client = client
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="cloud-tasks")
        # Where each queue's tasks go: its route on the service that serves it.
        self._services = {WEBHOOKS: settings.webhook_delivery_url}

    @property
    def client(self) -> CloudTasksClient:
        with self._lock:
            if self._client is None:
                self._client = tasks_client(self.settings)
            return self._client

    def queue_path(self, topic: str) -> str:
        spec = queue(topic)
        if spec is None:
            raise ValueError(f"no Cloud Tasks queue carries topic {topic!r}")
        return (
            f"projects/{self.project}/locations/{self.settings.tasks_location}/queues/"
            f"{self.settings.topic_prefix}{spec.name}"
        )

    def task(self, topic: str, data: bytes, attributes: dict[str, str]) -> dict:
        """The HTTP task that carries one message."""
        spec, parent = queue(topic), self.queue_path(topic)
        if spec is None:
            raise ValueError(f"{topic} is not carried by a Cloud Tasks queue")
        service = self._services.get(topic)
        if not service:
            raise ValueError(f"WEBHOOK_DELIVERY_URL is not set: nowhere to send the {topic} queue's tasks")
        url = service.rstrip("/") + spec.route.path
        # The trace the message carries, for the request's own log and trace too (the envelope has it as well).
        trace = {name: attributes[name] for name in ("traceparent", "tracestate") if name in attributes}
        request: dict = {"url": url, "http_method": "POST", "headers": {"Content-Type": "application/json", **trace}}
        if self.settings.cloud_tasks_emulator_host:
            if self.settings.push_auth_token:
                request["url"] += "?" + urlencode({"token": self.settings.push_auth_token})
        elif self.settings.tasks_service_account:
            request["oidc_token"] = {
                "service_account_email": self.settings.tasks_service_account,
                "audience": self.settings.push_audience or url,
            }
        key = attributes.get("key", "")
        envelope = build_push_envelope(data, attributes, subscription=parent, message_id=key or None)
        request["body"] = json.dumps(envelope).encode()
        task: dict = {"http_request": request}
        if key:
            task["name"] = f"{parent}/tasks/{key}"
        if (due := schedule_time(attributes)) is not None:
            task["schedule_time"] = due
        return task

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        task = self.task(topic, data, attributes)  # a message that can never be a task fails here, for good
        return self._pool.submit(self._create, self.queue_path(topic), task)

    def ready(self) -> None:
        """Raise unless Cloud Tasks answers a question about the queue (a refusal to say counts)."""
        from google.api_core.exceptions import PermissionDenied

        with contextlib.suppress(PermissionDenied):  # an enqueuer may not read queues
            self.client.get_queue(name=self.queue_path(WEBHOOKS), timeout=self.timeout_s)

    def _create(self, parent: str, task: dict[str, Any]) -> str:
        from google.api_core.exceptions import AlreadyExists

        try:
            # The client takes a task's dict form too; its types name only the message class.
            return self.client.create_task(parent=parent, task=task, timeout=self.timeout_s).name  # type: ignore[arg-type]
        except AlreadyExists:  # this message was made a task before: once is enough
            return task.get("name", "")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class TopicRouter:
    """A publisher per logical topic: the queues' own, and ``default`` for every other topic."""

    def __init__(self, default: Publisher, routes: dict[str, Publisher]) -> None:
        self.default, self.routes = default, routes

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        return self.routes.get(topic, self.default).publish(topic, data, attributes)

    def ready(self) -> None:
        for publisher in (self.default, *self.routes.values()):
            publisher.ready()
