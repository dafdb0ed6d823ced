"""Everything the services expect to exist, created idempotently on the emulators.

``topology(settings, endpoints)`` is the whole picture in one place, one
record per cloud resource (``google_pubsub_topic``, ``google_pubsub_subscription``,
``google_cloud_tasks_queue``, ``google_storage_bucket``), so Terraform can be
read against it line by line. ``apply`` creates what is missing and leaves
what exists: running it twice changes nothing.

Services are named as in docker compose and on Cloud Run: ``archiver-pdf`` (one
per archiver), ``summarizer``, ``dead-letter``. In compose, where each is
reached by its name (the default ``--endpoints``):

    python -m emulators.bootstrap --tasks-host tasks:8123 --schema
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from htbase.config import Settings
from htbase.topology import ACK_DEADLINE_S, DEAD_LETTER, MAX_BACKOFF_S, PUSH_SERVICES, QUEUES, ROUTES, topic_name


@dataclass(frozen=True)
class PushSubscription:
    name: str
    topic: str
    service: str
    push_endpoint: str
    ack_deadline_s: int
    min_backoff_s: float
    max_backoff_s: float
    dead_letter_topic: str = ""  # empty on the dead-letter topic's own subscription
    max_delivery_attempts: int = 0
    oidc_service_account: str = ""  # cloud only: Pub/Sub signs every push as this account
    oidc_audience: str = ""


@dataclass(frozen=True)
class Queue:
    name: str
    max_dispatches_per_second: float
    max_attempts: int
    min_backoff_s: float


@dataclass(frozen=True)
class Topology:
    project: str
    topics: tuple[str, ...]
    subscriptions: tuple[PushSubscription, ...]
    tasks_project: str
    tasks_location: str
    queues: tuple[Queue, ...]
    bucket: str


def topology(settings: Settings, endpoints: Mapping[str, str]) -> Topology:
    """Topics, push subscriptions, queues and bucket; ``endpoints`` maps each of PUSH_SERVICES to its URL."""
    prefix = settings.topic_prefix
    dead_letter_topic = topic_name(prefix, DEAD_LETTER)
    emulated = bool(settings.pubsub_emulator_host)
    attempts = settings.max_delivery_attempts

    def push(topic: str, service: str, dead_letter: str) -> PushSubscription:
        endpoint = endpoints[service]
        if emulated and settings.push_auth_token:
            # The emulator sends no Authorization header: the shared token rides in the URL instead.
            endpoint += ("&" if "?" in endpoint else "?") + urlencode({"token": settings.push_auth_token})
        return PushSubscription(
            name=f"{topic}-push",
            topic=topic,
            service=service,
            push_endpoint=endpoint,
            ack_deadline_s=ACK_DEADLINE_S,
            min_backoff_s=settings.retry_backoff_s,
            max_backoff_s=max(MAX_BACKOFF_S, settings.retry_backoff_s),
            dead_letter_topic=dead_letter,
            max_delivery_attempts=attempts if dead_letter else 0,
            oidc_service_account="" if emulated else settings.push_service_account,
            oidc_audience="" if emulated else settings.push_audience,
        )

    subscriptions = [
        push(topic_name(prefix, r.topic), r.service, dead_letter_topic if r.dead_lettered else "") for r in ROUTES
    ]
    return Topology(
        project=settings.pubsub_project_id,
        topics=tuple(topic_name(prefix, r.topic) for r in ROUTES),
        subscriptions=tuple(subscriptions),
        tasks_project=settings.google_cloud_project or settings.pubsub_project_id,
        tasks_location=settings.tasks_location,
        queues=tuple(
            Queue(f"{prefix}{q.name}", q.max_dispatches_per_second, settings.max_attempts, settings.retry_backoff_s)
            for q in QUEUES
        ),
        bucket=settings.gcs_bucket,
    )


def apply(plan: Topology, settings: Settings, *, tasks_host: str = "") -> None:
    """Create whatever of ``plan`` is missing on the emulators named in ``settings`` (and ``tasks_host``)."""
    from google.api_core.exceptions import AlreadyExists, Conflict

    if not settings.pubsub_emulator_host:
        raise ValueError("the bootstrap is for emulators (PUBSUB_EMULATOR_HOST); Terraform owns the cloud")
    publisher, subscriber = pubsub_clients(settings.pubsub_emulator_host)
    for topic in plan.topics:
        with suppress(AlreadyExists):
            publisher.create_topic(name=publisher.topic_path(plan.project, topic))
    for sub in plan.subscriptions:
        with suppress(AlreadyExists):
            subscriber.create_subscription(request=subscription_request(plan.project, sub))
    if tasks_host:
        from google.cloud import tasks_v2

        from emulators.cloudtasks import tasks_client

        tasks = tasks_client(tasks_host)
        parent = f"projects/{plan.tasks_project}/locations/{plan.tasks_location}"
        for queue in plan.queues:
            with suppress(AlreadyExists):  # (the emulator returns the existing queue instead)
                tasks.create_queue(
                    parent=parent,
                    queue=tasks_v2.Queue(
                        name=f"{parent}/queues/{queue.name}",
                        rate_limits={"max_dispatches_per_second": queue.max_dispatches_per_second},
                        retry_config={
                            "max_attempts": queue.max_attempts,
                            "min_backoff": timedelta(seconds=queue.min_backoff_s),
                        },
                    ),
                )
    if plan.bucket and settings.storage_emulator_host:
        from infra.storage import gcs_client

        with suppress(Conflict):
            gcs_client(settings).create_bucket(plan.bucket, project=plan.project)


def bootstrap(settings: Settings, endpoints: Mapping[str, str], *, tasks_host: str = "") -> Topology:
    plan = topology(settings, endpoints)
    apply(plan, settings, tasks_host=tasks_host)
    return plan


def subscription_request(project: str, sub: PushSubscription) -> dict:
    push_config: dict = {"push_endpoint": sub.push_endpoint}
    if sub.oidc_service_account:
        push_config["oidc_token"] = {
            "service_account_email": sub.oidc_service_account,
            "audience": sub.oidc_audience or sub.push_endpoint,
        }
    request = {
        "name": f"projects/{project}/subscriptions/{sub.name}",
        "topic": f"projects/{project}/topics/{sub.topic}",
        "push_config": push_config,
        "ack_deadline_seconds": sub.ack_deadline_s,
        "retry_policy": {
            "minimum_backoff": timedelta(seconds=sub.min_backoff_s),
            "maximum_backoff": timedelta(seconds=sub.max_backoff_s),
        },
        "expiration_policy": {},  # no TTL: never expire (the cloud's default is 31 days idle)
    }
    if sub.dead_letter_topic:
        request["dead_letter_policy"] = {
            "dead_letter_topic": f"projects/{project}/topics/{sub.dead_letter_topic}",
            "max_delivery_attempts": sub.max_delivery_attempts,
        }
    return request


def pubsub_clients(host: str):
    """Admin clients (publisher, subscriber) for the emulator at ``host``, sharing one channel."""
    import google.cloud.pubsub_v1 as pubsub_v1

    from infra.pubsub import emulator_transports

    publisher, subscriber = emulator_transports(host)
    return pubsub_v1.PublisherClient(transport=publisher), pubsub_v1.SubscriberClient(transport=subscriber)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.bootstrap", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--endpoints", default="http://{service}:8080/", help="push URL template with {service} (default: %(default)s)"
    )
    parser.add_argument("--tasks-host", default="", help="Cloud Tasks emulator HOST:PORT (queues skipped if unset)")
    parser.add_argument(
        "--schema", action="store_true", help="also create or upgrade the ledger schema (unless RUN_MIGRATIONS=false)"
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if args.schema and settings.run_migrations:
        from infra.db import migrate_database

        migrate_database(settings)
    plan = bootstrap(settings, {s: args.endpoints.format(service=s) for s in PUSH_SERVICES}, tasks_host=args.tasks_host)
    print(
        f"bootstrapped {len(plan.topics)} topics, {len(plan.subscriptions)} push subscriptions, "
        f"{len(plan.queues) if args.tasks_host else 0} queues" + (f", bucket {plan.bucket}" if plan.bucket else "")
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
