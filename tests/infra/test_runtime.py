"""The runtime, where it ties the ledger to the replica."""

from __future__ import annotations

from infra.db import migrate
from infra.replica import ReplicaSync, task_documents
from infra.replica_queue import ReplicaQueue
from infra.runtime import Runtime
from tests.helpers import MemoryReplica, new_item, time_passes


def test_the_documents_of_work_the_sweeper_gave_up_on_are_written(settings):
    """No capture reports work that crashed its last attempt: the sweeper fails it, and its task's
    document must show that, not the `processing` its last capture left."""
    runtime = Runtime(settings.with_(max_attempts=1))
    migrate(runtime.engine)
    replica = MemoryReplica()
    render = task_documents(runtime.ledger, runtime.summaries)
    runtime.replica = ReplicaSync(ReplicaQueue(runtime.engine), replica, render)
    task_id = runtime.ledger.create_task([new_item()], ["pdf"]).task_id
    runtime.ledger.claim(task_id, "pdf", "a-process-that-died")
    runtime.replica.sync(task_id)
    assert replica.documents[task_id]["subtasks"]["pdf"]["status"] == "processing"
    time_passes(runtime.ledger, task_id, settings.lease_s + 1)

    assert runtime.ledger.sweep()["failed"] == 1  # as housekeeping runs it
    assert replica.documents[task_id] == render(task_id)[task_id]
    assert replica.documents[task_id]["status"] == "failed"
    runtime.close()
