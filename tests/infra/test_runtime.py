"""The runtime, where it ties the ledger to the replica."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from infra.db import migrate
from infra.models import ReplicaPending
from infra.replica import ReplicaSync, task_documents
from infra.replica_queue import ReplicaQueue
from infra.runtime import Runtime
from tests.helpers import MemoryReplica, new_item, stored, time_passes


@pytest.fixture
def runtime(settings):
    """A runtime whose replica is on (a dict standing in for Firestore), with max_attempts=1."""
    runtime = Runtime(settings.with_(max_attempts=1, firestore_project_id="htbase-test"))
    migrate(runtime.engine)
    runtime.replica = ReplicaSync(
        ReplicaQueue(runtime.engine), MemoryReplica(), task_documents(runtime.ledger, runtime.summaries)
    )
    yield runtime
    runtime.close()


def documents(runtime: Runtime) -> dict:
    return runtime.replica.replica.documents


def rendered(runtime: Runtime, task_id: str) -> dict:
    return runtime.replica.render(task_id)[task_id]


def test_the_documents_of_work_the_sweeper_gave_up_on_are_written(runtime, settings):
    """No capture reports work that crashed its last attempt: the sweeper fails it, and its task's
    document must show that, not the `processing` its last capture left."""
    task_id = runtime.ledger.create_task([new_item()], ["pdf"]).task_id
    runtime.ledger.claim(task_id, "pdf", "a-process-that-died")
    runtime.replica.sync(task_id)
    assert documents(runtime)[task_id]["subtasks"]["pdf"]["status"] == "processing"
    time_passes(runtime.ledger, task_id, settings.lease_s + 1)

    assert runtime.ledger.sweep()["failed"] == 1  # as housekeeping runs it
    assert documents(runtime)[task_id] == rendered(runtime, task_id)
    assert documents(runtime)[task_id]["status"] == "failed"


def test_a_capture_killed_between_its_commit_and_its_replica_write_gets_it_from_housekeeping(runtime):
    task_id = runtime.ledger.create_task([new_item()], ["pdf"]).task_id
    runtime.ledger.claim(task_id, "pdf", "w")
    runtime.replica.sync(task_id)
    runtime.ledger.complete(task_id, "pdf", "w", stored(task_id), meta={}, duration_ms=1)  # ...and killed
    assert documents(runtime)[task_id]["status"] == "processing"

    assert runtime.replica.retry_pending()["written"] == 0  # within the grace: its own process writes it
    with runtime.ledger.session() as session, session.begin():  # the grace has passed
        session.execute(update(ReplicaPending).values(next_attempt_at=ReplicaPending.created_at))
    assert runtime.replica.retry_pending()["written"] == 1
    assert documents(runtime)[task_id] == rendered(runtime, task_id)
    assert documents(runtime)[task_id]["status"] == "success"
    assert ReplicaQueue(runtime.engine).backlog()[0] == 0


@pytest.mark.parametrize("ending", ["complete", "fail"])
def test_the_write_after_a_captures_end_settles_what_it_owed(runtime, ending):
    task_id = runtime.ledger.create_task([new_item()], ["pdf"]).task_id
    runtime.ledger.claim(task_id, "pdf", "w")
    if ending == "complete":
        runtime.ledger.complete(task_id, "pdf", "w", stored(task_id), meta={}, duration_ms=1)
    else:
        runtime.ledger.fail(task_id, "pdf", "w", "HTTP 404", permanent=True)
    assert ReplicaQueue(runtime.engine).backlog()[0] == 1  # owed, in the same transaction
    runtime.replica.sync(task_id)
    assert ReplicaQueue(runtime.engine).backlog()[0] == 0
