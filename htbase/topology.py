"""The one map of messages to the services that handle them.

Each logical topic names the push route that handles it in the push app, the
functions-framework target that serves it on Cloud Run (``functions/main.py``)
and the service that runs it (a Cloud Run service, a compose service, a
process of the emulator stack). The embedded dispatcher, the push app, the
emulator bootstrap and stack, and Terraform's ``topology.auto.tfvars.json``
all read it from here, so nothing else spells a topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from htbase.messages import ARCHIVERS

# Logical topics; the deployment's TOPIC_PREFIX makes them real topic names.
SUMMARIZE = "summarize"
DEAD_LETTER = "dead-letter"

# A push answered later than this counts as failed and is redelivered. Captures and
# summaries stop on their own timeouts well before; leases and the sweeper cover a hung process.
ACK_DEADLINE_S = 600
MAX_BACKOFF_S = 60.0


def archive_topic(archiver: str) -> str:
    return f"archive-{archiver}"


def topic_name(prefix: str, subject: str) -> str:
    """The real topic for an archiver name or a logical topic, e.g. ``htbase-archive-pdf``."""
    return prefix + (archive_topic(subject) if subject in ARCHIVERS else subject)


@dataclass(frozen=True)
class Route:
    """One logical topic, its push subscription, and who serves it."""

    topic: str  # logical topic, e.g. "archive-pdf"
    service: str  # service name on Cloud Run, in compose and in the emulator stack
    target: str  # functions-framework target in functions/main.py
    path: str  # push path in the push app (functions/push.py)
    archiver: str = ""  # the ARCHIVERS value of an archiver service
    role: str = "archiver"  # its SERVICE_ROLE

    @property
    def service_env(self) -> dict[str, str]:
        """The settings that make a process this service (beside the deployment's shared ones)."""
        env = {"SERVICE_ROLE": self.role}
        if self.archiver:
            env["ARCHIVERS"] = self.archiver
        return env

    @property
    def dead_lettered(self) -> bool:
        """Every subscription but the dead-letter topic's own hands exhausted messages on."""
        return self.topic != DEAD_LETTER


ARCHIVE_PATH = "/push/archive"
SUMMARIZE_PATH = "/push/summarize"
DEAD_LETTER_PATH = "/push/dead-letter"

ROUTES: tuple[Route, ...] = (
    *(Route(archive_topic(name), f"archiver-{name}", f"archive_{name}", ARCHIVE_PATH, name) for name in ARCHIVERS),
    Route(SUMMARIZE, "summarizer", "summarize", SUMMARIZE_PATH, role="summarizer"),
    Route(DEAD_LETTER, "dead-letter", "dead_letter", DEAD_LETTER_PATH),
)
PUSH_SERVICES: tuple[str, ...] = tuple(route.service for route in ROUTES)

# Cloud Scheduler calls this target with OIDC; it is not behind a subscription.
HOUSEKEEPING = Route("", "housekeeping", "housekeeping", "/push/housekeeping", role="api")


def route(topic: str) -> Route:
    """The route of a logical topic."""
    for candidate in ROUTES:
        if candidate.topic == topic:
            return candidate
    raise KeyError(f"no route for topic {topic!r}")


def archiver_service(archiver: str) -> str:
    return route(archive_topic(archiver)).service


@dataclass(frozen=True)
class QueueSpec:
    """A Cloud Tasks queue; its real name is the deployment's TOPIC_PREFIX plus ``name``.

    Its HTTP tasks carry a push envelope to ``route``'s service, which is ours: the
    queue's logical topic is the outbox's, and the embedded dispatcher serves the same path.
    """

    name: str
    purpose: str
    max_dispatches_per_second: float
    route: Route


WEBHOOKS = "webhooks"
WEBHOOK_PATH = "/push/webhook"
# Re-captures need no queue: housekeeping (Cloud Scheduler's tick) adds the snapshots that are due.
QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(
        WEBHOOKS,
        "webhook deliveries to clients",
        10.0,
        Route(WEBHOOKS, "webhooks", "deliver_webhook", WEBHOOK_PATH, role="api"),
    ),
)
QUEUE_SERVICES: tuple[str, ...] = tuple(queue.route.service for queue in QUEUES)


def queue(topic: str) -> QueueSpec | None:
    """The Cloud Tasks queue that carries a logical topic, or None for a Pub/Sub topic."""
    return next((candidate for candidate in QUEUES if candidate.route.topic == topic), None)
