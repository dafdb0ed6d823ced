"""The Firestore replica against the real Firestore emulator: written after commit, queued on failure,
caught up with the latest state, bounded when Firestore is down or hangs, and off when not configured."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from emulators.firestore import FirestoreEmulator
from emulators.postgres import ThrowawayPostgres
from htbase.config import Settings
from infra.db import make_engine, migrate
from infra.ledger import Ledger
from infra.models import ReplicaPending
from infra.replica import (
    FirestoreReplica,
    ReplicaConflict,
    ReplicaSync,
    firestore_client,
    make_replica,
    task_documents,
)
from infra.replica_queue import PendingReplica, ReplicaQueue
from infra.summaries import Summaries
from tests.helpers import new_item, stored, wait_for

PROJECT = "htbase-replica-test"
# The client on its own retries an unreachable Firestore for a minute; with the replica's one-second
# deadline a write gives up in a second or two. The bound sits far from both, so a loaded machine
# cannot fail it, and a lost deadline still would.
WELL_UNDER_A_MINUTE = 20


class Counting:
    """A replica that counts the writes it is asked for."""

    def __init__(self, replica) -> None:
        self.replica, self.writes = replica, 0

    def write(self, documents) -> None:
        self.writes += 1
        self.replica.write(documents)


@pytest.fixture(scope="module")
def emulator():
    with FirestoreEmulator() as server:
        yield server


@pytest.fixture
def replica_settings(settings, emulator, monkeypatch):
    # Everything goes through Settings: the library's own env lookup must not be what makes it work.
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    emulator.start()  # a test that stopped it may have failed before restarting it
    emulator.reset(PROJECT)
    return settings.with_(firestore_project_id=PROJECT, firestore_emulator_host=emulator.host)


@pytest.fixture
def replica_sync(ledger, replica_settings):
    return ReplicaSync(
        ReplicaQueue(ledger.engine), make_replica(replica_settings), task_documents(ledger, Summaries(ledger.engine))
    )


@pytest.fixture
def read(replica_settings):
    collection = firestore_client(replica_settings).collection(replica_settings.firestore_collection)
    return lambda task_id: collection.document(task_id).get().to_dict()


def create(ledger, *urls, archivers=("pdf", "screenshot")):
    items = [new_item(url) for url in urls or ("https://example.org/a",)]
    return ledger.create_task(items, archivers, batch=len(items) > 1)


def finish(ledger, task_id, archiver="pdf"):
    ledger.claim(task_id, archiver, "w")
    ledger.complete(task_id, archiver, "w", stored(task_id, archiver), meta={"title": "A"}, duration_ms=5)


def queued(ledger):
    with ledger.session() as session:
        return {row.task_id: row for row in session.scalars(select(ReplicaPending))}


def test_sync_writes_the_task_document_with_artifacts_and_summary(ledger, replica_sync, read):
    task_id = create(ledger).task_id
    finish(ledger, task_id)
    Summaries(ledger.engine).save(
        task_id,
        "k" * 64,
        status="success",
        model="extractive",
        prompt_version="v1",
        result={"summary": "Short.", "key_points": ["one", "two"], "tags": ["x"]},
    )

    replica_sync.sync(task_id)

    document = read(task_id)
    assert document == task_documents(ledger, Summaries(ledger.engine))(task_id)[task_id]
    assert document["status"] == "processing" and document["subtasks"]["pdf"]["status"] == "success"
    assert document["subtasks"]["pdf"]["artifact"]["sha256"] == "ab" * 32
    assert document["summary"]["key_points"] == ["one", "two"]
    assert queued(ledger) == {}


def test_a_batch_item_change_rewrites_the_batch_document_too(ledger, replica_sync, read):
    created = create(ledger, "https://example.org/1", "https://example.org/2", archivers=("pdf",))
    replica_sync.sync(created.task_id)
    ids = [child["task_id"] for child in created.children]
    first, second = ids
    assert read(created.task_id)["status"] == "pending" and read(first)["status"] == "pending"

    finish(ledger, first)
    replica_sync.sync(first)

    assert read(first)["status"] == "success"
    batch = read(created.task_id)
    assert (batch["status"], batch["progress"]) == ("processing", 0.5)
    # A batch lists its children in the order of their ids (they share their creation time).
    assert [item["status"] for item in batch["items"]] == ["success" if i == first else "pending" for i in sorted(ids)]
    assert read(second)["status"] == "pending"


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # the engine the replica runs with
def test_outage_queues_without_failing_and_the_retry_writes_the_latest_state(ledger, replica_settings, emulator, read):
    replica = FirestoreReplica(firestore_client(replica_settings), replica_settings.firestore_collection, timeout_s=1.0)
    replica_sync = ReplicaSync(
        ReplicaQueue(ledger.engine), replica, task_documents(ledger, Summaries(ledger.engine)), backoff_s=0
    )
    task_id, other_id = create(ledger).task_id, create(ledger, "https://example.org/b").task_id
    replica_sync.sync(task_id)
    emulator.stop()

    finish(ledger, task_id, "pdf")
    replica_sync.replica = tried = Counting(replica)
    started = time.monotonic()
    replica_sync.sync(task_id)  # must not raise
    # The first sync waits out one write deadline, not the client's minute of retries...
    assert time.monotonic() - started < WELL_UNDER_A_MINUTE and tried.writes == 1
    replica_sync.sync(other_id)
    assert tried.writes == 1  # ...and the next ones queue without trying
    assert set(queued(ledger)) == {task_id, other_id}
    assert replica_sync.retry_pending() == {"written": 0, "failed": 1}
    assert queued(ledger)[task_id].attempts == 2 and "failed to connect" in queued(ledger)[task_id].last_error

    finish(ledger, task_id, "screenshot")  # the task moves on while Firestore is still down
    emulator.start()
    assert emulator.port == int(replica_settings.firestore_emulator_host.rsplit(":", 1)[1])

    # The client's channel reconnects on its own backoff: a retry before it does fails, as one while
    # Firestore was down did, and the next retry writes.
    retried = wait_for(
        lambda: (result := replica_sync.retry_pending())["written"] and result, 60, "a retry to reach Firestore again"
    )
    assert retried == {"written": 2, "failed": 0}
    document = read(task_id)
    assert document["status"] == "success"
    assert {name: sub["status"] for name, sub in document["subtasks"].items()} == {
        "pdf": "success",
        "screenshot": "success",
    }
    assert read(other_id)["status"] == "pending"
    assert queued(ledger) == {}
    # Firestore answers again: a sync writes at once instead of queueing.
    ledger.fail_undelivered(other_id, "pdf", "gone")
    replica_sync.sync(other_id)
    assert read(other_id)["subtasks"]["pdf"]["status"] == "failed" and queued(ledger) == {}


def test_a_hanging_firestore_costs_one_bounded_write(ledger):
    # A listener that never answers: connections open, requests hang (unlike a stopped emulator).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        client = firestore_client(Settings(firestore_project_id=PROJECT, firestore_emulator_host=host))
        replica_sync = ReplicaSync(
            ReplicaQueue(ledger.engine),
            FirestoreReplica(client, "tasks", timeout_s=1.0),
            task_documents(ledger, Summaries(ledger.engine)),
        )
        task_id = create(ledger).task_id
        started = time.monotonic()
        replica_sync.sync(task_id)
        assert time.monotonic() - started < WELL_UNDER_A_MINUTE  # one deadline, not the client's retries
    assert set(queued(ledger)) == {task_id}


def test_a_stale_write_that_lands_last_is_corrected(ledger, replica_sync, read):
    """Writer A renders, writer B changes the task and writes; A's older write lands after B's."""
    task_id = create(ledger).task_id
    replica, raced = replica_sync.replica, []
    other_writer = ReplicaSync(ReplicaQueue(ledger.engine), replica, task_documents(ledger, Summaries(ledger.engine)))

    class Racing:
        def write(self, documents):
            if not raced:
                raced.append(True)
                finish(ledger, task_id)
                other_writer.sync(task_id)  # B writes the newer state first
            replica.write(documents)  # then A's stale documents land

    replica_sync.replica = Racing()
    replica_sync.sync(task_id)

    assert raced and read(task_id)["subtasks"]["pdf"]["status"] == "success"
    assert queued(ledger) == {}


def test_turned_off_it_renders_writes_and_queues_nothing(ledger, settings, replica_settings, read):
    assert make_replica(settings) is None  # no FIRESTORE_PROJECT_ID
    rendered = []
    replica_sync = ReplicaSync(
        ReplicaQueue(ledger.engine), make_replica(settings), lambda task_id: rendered.append(task_id) or {}
    )
    task_id = create(ledger).task_id

    replica_sync.sync(task_id)

    assert not replica_sync.enabled
    assert replica_sync.retry_pending() == {"written": 0, "failed": 0}
    assert rendered == [] and queued(ledger) == {} and read(task_id) is None


def test_pending_rows_are_one_per_task_versioned_and_backed_off(ledger):
    queue = ReplicaQueue(ledger.engine)
    queue.add("t1", "first")
    queue.add("t1", "second")
    queue.add("t2", "x" * 5000)
    assert queue.due() == [PendingReplica("t1", 2), PendingReplica("t2", 1)]
    assert queued(ledger)["t1"].last_error == "second" and len(queued(ledger)["t2"].last_error) == 2000

    # A failure queued after the row was read keeps the row: the newer state still needs a write.
    stale = queue.due()[0]
    queue.add("t1", "third")
    assert queue.written(stale) is False
    assert queue.written(PendingReplica("t1", 3)) is True

    queue.retry_later(PendingReplica("t2", 1), "down", delay_s=60)
    assert queue.due() == []
    assert queued(ledger)["t2"].attempts == 2 and queued(ledger)["t2"].last_error == "down"
    queue.add("t2", "down again")  # a new failure keeps the backoff
    assert queue.due() == [] and queued(ledger)["t2"].attempts == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # unused: the test brings its own Postgres
def test_a_change_the_ledger_went_down_right_after_is_queued_once_it_answers(replica_settings, read):
    """The capture committed, then the ledger went down before its document was written or queued:
    the process keeps the task and queues it when the ledger is back, so housekeeping writes it."""
    with ThrowawayPostgres() as server:
        engine = make_engine(replica_settings.with_(database_url=server.url))
        migrate(engine)
        ledger = Ledger(engine)
        replica_sync = ReplicaSync(
            ReplicaQueue(engine), make_replica(replica_settings), task_documents(ledger, Summaries(engine)), backoff_s=0
        )
        task_id = create(ledger).task_id
        finish(ledger, task_id)
        server.halt()
        replica_sync.sync(task_id)  # neither written nor queued: the ledger is down
        server.start()
        wait_for(lambda: task_id in queued(ledger), 60, "the task to be queued")
        assert replica_sync.retry_pending()["written"] == 1
        assert read(task_id)["subtasks"]["pdf"]["status"] == "success"
        engine.dispose()


def overtaken(replica: FirestoreReplica, newer: Callable[[], None]) -> FirestoreReplica:
    """``replica``, whose commits reach Firestore only after ``newer`` ran: as a request that a frozen
    or partitioned Firestore applies late, after its writer timed out and another wrote."""
    make_batch = replica.client.batch

    def late_batch():
        batch = make_batch()
        commit = batch.commit

        def commit_late(**kwargs):
            newer()
            return commit(**kwargs)

        batch.commit = commit_late
        return batch

    replica.client.batch = late_batch
    return replica


@pytest.mark.parametrize("existing", [True, False], ids=["replaced", "created"])
def test_a_write_that_lands_after_a_newer_one_does_not_put_the_old_state_back(replica_settings, read, existing):
    collection = replica_settings.firestore_collection
    replica = FirestoreReplica(firestore_client(replica_settings), collection)
    if existing:
        replica.write({"t": {"status": "pending", "error": "gone in the newer state"}})
    late = overtaken(
        FirestoreReplica(firestore_client(replica_settings), collection),
        lambda: replica.write({"t": {"status": "success"}}),
    )
    with pytest.raises(ReplicaConflict):
        late.write({"t": {"status": "processing"}})
    assert read("t") == {"status": "success"}  # whole: the fields the newer state lacks are gone too


def test_a_sync_whose_write_conflicts_writes_what_the_ledger_holds_then(ledger, replica_settings, read):
    task_id = create(ledger, archivers=("pdf",)).task_id
    render = task_documents(ledger, Summaries(ledger.engine))
    other = FirestoreReplica(firestore_client(replica_settings), replica_settings.firestore_collection)
    raced: list[bool] = []

    def another_writer_finishes_the_task() -> None:
        if not raced:
            raced.append(True)
            finish(ledger, task_id)
            other.write(render(task_id))

    replica = overtaken(
        FirestoreReplica(firestore_client(replica_settings), replica_settings.firestore_collection),
        another_writer_finishes_the_task,
    )
    ReplicaSync(ReplicaQueue(ledger.engine), replica, render).sync(task_id)
    assert raced and read(task_id) == render(task_id)[task_id]
    assert read(task_id)["status"] == "success"
