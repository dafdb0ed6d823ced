"""The ``housekeeping`` target, which Cloud Scheduler calls: it refuses an unauthenticated call
untouched, and one authenticated call is one round: work whose lease expired (a crashed capture)
is republished, and whatever the outbox still holds goes to the real Pub/Sub emulator."""

from __future__ import annotations

import itertools

import pytest

from emulators.bootstrap import pubsub_clients
from emulators.pubsub import PubSubEmulator
from htbase.config import Settings
from htbase.messages import ArchiveRequest
from htbase.topology import topic_name
from infra.db import make_engine, migrate
from infra.ledger import Ledger
from infra.outbox import Outbox
from tests.helpers import new_item, time_passes, wait_for

PROJECT = "htbase-local"
TOKEN = "scheduler-s3cret"
LEASE_S = 60
PREFIXES = (f"hk{n}-" for n in itertools.count())
# A cloud role runs on the shared PostgreSQL ledger only.
pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)


@pytest.fixture(scope="module")
def pubsub():
    with PubSubEmulator() as emulator:
        yield emulator


@pytest.fixture
def ledger_url(database_url) -> str:
    """A ledger of this test's own: the round writes to it."""
    engine = make_engine(Settings(database_url=database_url))
    migrate(engine)
    engine.dispose()
    return database_url


@pytest.fixture
def ledger(ledger_url):
    engine = make_engine(Settings(database_url=ledger_url))
    yield Ledger(engine, lease_s=LEASE_S, max_attempts=3)
    engine.dispose()


@pytest.fixture
def target(serve_target, pubsub):
    """The target as Cloud Run serves it, publishing to a topic of this test's own; and what reaches that topic."""
    prefix = next(PREFIXES)
    publisher, subscriber = pubsub_clients(pubsub.host)
    topic = publisher.topic_path(PROJECT, topic_name(prefix, "pdf"))
    publisher.create_topic(name=topic)
    subscription = subscriber.subscription_path(PROJECT, f"{topic_name(prefix, 'pdf')}-pull")
    subscriber.create_subscription(name=subscription, topic=topic)

    def published(count: int) -> set[str]:
        """The task ids of the first ``count`` messages on the topic."""
        task_ids: set[str] = set()

        def pulled() -> bool:
            response = subscriber.pull(subscription=subscription, max_messages=100, timeout=10)
            task_ids.update(ArchiveRequest.from_json(m.message.data).task_id for m in response.received_messages)
            return len(task_ids) >= count

        wait_for(pulled, 60, f"{count} messages")
        return task_ids

    client = serve_target(
        "housekeeping",
        SERVICE_ROLE="api",
        PUSH_AUTH_TOKEN=TOKEN,
        PUBSUB_EMULATOR_HOST=pubsub.host,
        PUBSUB_PROJECT_ID=PROJECT,
        TOPIC_PREFIX=prefix,
        LEASE_SECONDS=str(LEASE_S),
    )
    return client, published


def crashed_capture(ledger: Ledger) -> str:
    """A task whose pdf capture was claimed by a process that died: its lease ran out long ago."""
    task_id = ledger.create_task([new_item("https://example.org/crashed")], ["pdf"]).task_id
    outbox = Outbox(ledger.engine)
    outbox.mark_sent(row.id for row in outbox.unsent())  # its request went out once
    ledger.claim(task_id, "pdf", "a-process-that-died")
    time_passes(ledger, task_id, LEASE_S + 1)
    return task_id


def test_an_unauthenticated_call_is_refused_and_changes_nothing(target, ledger):
    client, _ = target
    task_id = crashed_capture(ledger)
    unsent = ledger.create_task([new_item("https://example.org/waiting")], ["pdf"]).task_id
    for url in ("/", "/?token=wrong"):
        response = client.post(url)
        assert response.status_code == 401, response.get_data(as_text=True)
    assert ledger.task(task_id).artifacts[0].status == "processing"
    assert [ArchiveRequest.from_json(row.data).task_id for row in Outbox(ledger.engine).unsent()] == [unsent]


def test_one_call_is_one_round_that_republishes_stale_work_and_the_outbox(target, ledger):
    client, published = target
    crashed = crashed_capture(ledger)
    waiting = ledger.create_task([new_item("https://example.org/waiting")], ["pdf"]).task_id

    response = client.post(f"/?token={TOKEN}")
    assert response.status_code == 200, response.get_data(as_text=True)
    counts = response.get_json()
    assert (counts["republished"], counts["failed"], counts["published"]) == (1, 0, 2)
    assert published(2) == {crashed, waiting}
    assert Outbox(ledger.engine).unsent() == []
    artifact = ledger.task(crashed).artifacts[0]
    assert (artifact.status, artifact.lease_owner) == ("pending", None)  # for the next delivery to claim
