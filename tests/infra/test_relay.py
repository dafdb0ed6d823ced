"""The outbox relay: on the real Pub/Sub emulator, a message the broker can never take is failed with
its work, and never holds up the messages behind it; on its own, with a broker that can be down,
rows stay unsent through an outage and go out, in order, when it ends."""

from __future__ import annotations

import time
from concurrent.futures import Future

import pytest
from google.api_core.exceptions import ServiceUnavailable

from emulators.bootstrap import pubsub_clients
from emulators.pubsub import PubSubEmulator
from htbase.config import Settings
from htbase.topology import topic_name
from infra.db import migrate
from infra.ledger import NewItem
from infra.outbox import Outbox, Outgoing
from infra.pubsub import PubSubPublisher
from infra.relay import MAX_MESSAGE_BYTES, Relay
from infra.runtime import Runtime
from tests.helpers import new_item, wait_for

PROJECT = "htbase-local"


@pytest.fixture(scope="module")
def pubsub():
    with PubSubEmulator() as emulator:
        yield emulator


@pytest.fixture
def runtime(pubsub, tmp_path):
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        local_storage_path=tmp_path / "archives",
        pubsub_emulator_host=pubsub.host,
        pubsub_project_id=PROJECT,
        broker="pubsub",
        topic_prefix=f"t{time.monotonic_ns()}-",
    )
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


def outbox_states(ledger) -> dict[int, tuple[bool, bool, str | None]]:
    """Each outbox row: (sent, failed, last error)."""
    from sqlalchemy import select

    from infra.models import OutboxMessage

    with ledger.session() as session:
        return {
            m.id: (m.sent_at is not None, m.failed_at is not None, m.last_error)
            for m in session.scalars(select(OutboxMessage))
        }


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
    states = outbox_states(runtime.ledger)
    failed = [state for state in states.values() if state[1]]
    assert len(failed) == 1 + 201 + 1 and not any(sent for sent, _, _ in failed)
    assert sum(sent for sent, _, _ in states.values()) == len(healthy)
    errors = [error for _, _, error in failed]
    assert "MessageTooLarge" in errors[0] and all("TypeError" in e for e in errors[1:-1])
    assert "InvalidArgument" in errors[-1]
    artifact = runtime.ledger.task(oversized).artifacts[0]
    assert artifact.status == "failed" and "could not be published: MessageTooLarge" in artifact.error
    assert runtime.relay.flush(min_age_s=0) == 0  # failed rows are never tried again
    assert outbox_states(runtime.ledger) == states


def test_a_refused_message_does_not_cool_the_publisher_down(runtime, pdf_subscription):
    """The broker's refusal of one message says nothing about the broker: the next request goes out at once."""
    [refused] = runtime.outbox.add(Outgoing("archive-pdf", b"", {}))
    runtime.relay.send([refused])
    deadline = time.monotonic() + 30
    while not outbox_states(runtime.ledger)[refused.id][1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "InvalidArgument" in outbox_states(runtime.ledger)[refused.id][2]

    task_id = runtime.ledger.create_task([NewItem("https://example.org/next", "n" * 64)], ["pdf"])
    runtime.relay.send(task_id.outbox)
    assert pdf_subscription(1) == {task_id.task_id}


# --- the relay on its own: a broker that can be down ------------------------------------------


class Broker:
    """An in-memory publisher whose broker can be down: a publish then fails as in an outage
    (the future raises ServiceUnavailable, which is worth another try)."""

    def __init__(self) -> None:
        self.up, self.taken, self.tried = True, [], 0

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> Future:
        self.tried += 1
        future: Future = Future()
        if self.up:
            self.taken.append(attributes["task_id"])
            future.set_result(str(len(self.taken)))
        else:
            future.set_exception(ServiceUnavailable("the broker is down"))
        return future


@pytest.fixture
def broker_relay(ledger):
    broker = Broker()
    return broker, Relay(Outbox(ledger.engine), broker, fail_artifact=ledger.fail_undelivered)


def accepted(ledger, n: int) -> list[str]:
    return [ledger.create_task([new_item(f"https://example.org/{i}")], ["pdf"]).task_id for i in range(n)]


def test_send_marks_rows_sent_once_the_broker_has_them(ledger, broker_relay):
    broker, relay = broker_relay
    created = ledger.create_task([new_item()], ["pdf", "screenshot"])
    relay.send(created.outbox)
    wait_for(lambda: not relay.outbox.unsent(), 30, "the rows to be marked sent")
    assert broker.taken == [created.task_id] * 2


def test_rows_stay_unsent_while_the_broker_is_down_and_go_out_in_order_when_it_returns(ledger, broker_relay):
    broker, relay = broker_relay
    broker.up = False
    task_ids = accepted(ledger, 3)
    rows = relay.outbox.unsent()
    relay.send(rows)  # the writers' own publish, right after their commit
    assert relay.flush(min_age_s=0) == 0  # the housekeeper's, while the broker is still down
    states = outbox_states(ledger)
    assert [row.id for row in relay.outbox.unsent()] == [row.id for row in rows]
    assert all(not sent and not failed and "ServiceUnavailable" in error for sent, failed, error in states.values())

    broker.up = True
    assert relay.flush(min_age_s=0) == 3
    assert broker.taken == task_ids and relay.outbox.unsent() == []
    assert all(ledger.task(t).artifacts[0].status == "pending" for t in task_ids)  # an outage fails no work


def test_a_flush_leaves_fresh_rows_to_their_writer(ledger, broker_relay):
    broker, relay = broker_relay
    accepted(ledger, 2)
    assert relay.flush(min_age_s=60) == 0 and broker.tried == 0
    assert len(relay.outbox.unsent()) == 2


def test_while_the_broker_is_down_a_flush_stops_after_one_batch(ledger, broker_relay):
    """Every row of a batch failed: the broker is down, and the rest waits for the next round."""
    broker, relay = broker_relay
    broker.up = False
    for n in range(250):
        relay.outbox.add(Outgoing("archive-pdf", b"{}", {"task_id": f"t{n}"}))
    assert relay.flush(min_age_s=0) == 0
    assert broker.tried == 200 and len(relay.outbox.unsent(limit=1000)) == 250
