"""The outbox relay on the real Pub/Sub emulator: a message the broker can never take is failed with
its work, and never holds up the messages behind it."""
from __future__ import annotations

import time

import pytest

from emulators.bootstrap import pubsub_clients
from emulators.pubsub import PubSubEmulator
from htbase.config import Settings
from htbase.topology import topic_name
from infra.db import migrate
from infra.ledger import NewItem
from infra.outbox import Outgoing
from infra.pubsub import PubSubPublisher
from infra.relay import MAX_MESSAGE_BYTES
from infra.runtime import Runtime

PROJECT = "htbase-local"


@pytest.fixture(scope="module")
def pubsub():
    with PubSubEmulator() as emulator:
        yield emulator


@pytest.fixture
def runtime(pubsub, tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", local_storage_path=tmp_path / "archives",
                        pubsub_emulator_host=pubsub.host, pubsub_project_id=PROJECT, broker="pubsub",
                        topic_prefix=f"t{time.monotonic_ns()}-")
    runtime = Runtime(settings, PubSubPublisher(settings))
    migrate(runtime.engine)
    yield runtime
    runtime.close()


@pytest.fixture
def pdf_subscription(pubsub, runtime):
    """The archive-pdf topic, with a pull subscription that shows what the broker really got."""
    publisher, subscriber = pubsub_clients(pubsub.host)
    topic = publisher.topic_path(PROJECT, topic_name(runtime.settings.topic_prefix, "archive-pdf"))
    publisher.create_topic(name=topic)
    subscription = subscriber.subscription_path(PROJECT, topic.rsplit("/", 1)[1])
    subscriber.create_subscription(name=subscription, topic=topic)

    def received(count: int) -> set[str]:
        """The task ids of ``count`` messages, polled for until they are all there."""
        task_ids: set[str] = set()
        deadline = time.monotonic() + 30
        while len(task_ids) < count and time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
            task_ids |= {m.message.attributes["task_id"] for m in response.received_messages}
            if ack_ids := [m.ack_id for m in response.received_messages]:
                subscriber.acknowledge(subscription=subscription, ack_ids=ack_ids)
        return task_ids

    return received


def new_task(runtime, n: int, **options) -> str:
    url = f"https://example.org/{n}"
    return runtime.ledger.create_task([NewItem(url, f"{n:064d}")], ["pdf"], options=options).task_id


def outbox_states(runtime) -> dict[int, tuple[bool, bool, str | None]]:
    """Each outbox row: (sent, failed, last error)."""
    from sqlalchemy import select

    from infra.models import OutboxMessage

    with runtime.ledger.session() as session:
        return {m.id: (m.sent_at is not None, m.failed_at is not None, m.last_error)
                for m in session.scalars(select(OutboxMessage))}


def test_poisoned_rows_are_failed_with_their_work_and_hold_up_nothing(runtime, pdf_subscription):
    # Written before any check could stop them (an older API, another writer): a request over
    # Pub/Sub's 10 MB limit, then a whole batch of rows the client refuses (an attribute that is
    # not text), then an empty message the emulator itself refuses with InvalidArgument.
    oversized = new_task(runtime, 0, padding="x" * MAX_MESSAGE_BYTES)
    for n in range(201):
        runtime.outbox.add(Outgoing("archive-pdf", b"{}", {"task_id": f"bad-{n}", "n": n}))  # type: ignore[dict-item]
    runtime.outbox.add(Outgoing("archive-pdf", b"", {}))
    healthy = [new_task(runtime, n) for n in range(1, 6)]

    assert runtime.relay.flush(min_age_s=0) == len(healthy)  # one flush: nothing waits for a later tick

    assert pdf_subscription(len(healthy)) == set(healthy)
    states = outbox_states(runtime)
    failed = [state for state in states.values() if state[1]]
    assert len(failed) == 1 + 201 + 1 and not any(sent for sent, _, _ in failed)
    assert sum(sent for sent, _, _ in states.values()) == len(healthy)
    errors = [error for _, _, error in failed]
    assert "MessageTooLarge" in errors[0] and all("TypeError" in e for e in errors[1:-1])
    assert "InvalidArgument" in errors[-1]
    artifact = runtime.ledger.task(oversized).artifacts[0]
    assert artifact.status == "failed" and "could not be published: MessageTooLarge" in artifact.error
    assert runtime.relay.flush(min_age_s=0) == 0  # failed rows are never tried again
    assert outbox_states(runtime) == states


def test_a_refused_message_does_not_cool_the_publisher_down(runtime, pdf_subscription):
    """The broker's refusal of one message says nothing about the broker: the next request goes out at once."""
    [refused] = runtime.outbox.add(Outgoing("archive-pdf", b"", {}))
    runtime.relay.send([refused])
    deadline = time.monotonic() + 30
    while not outbox_states(runtime)[refused.id][1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "InvalidArgument" in outbox_states(runtime)[refused.id][2]

    task_id = runtime.ledger.create_task([NewItem("https://example.org/next", "n" * 64)], ["pdf"])
    runtime.relay.send(task_id.outbox)
    assert pdf_subscription(1) == {task_id.task_id}
