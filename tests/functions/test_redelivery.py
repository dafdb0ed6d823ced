"""A push that comes back after its work was finished: nothing is captured again, and the replica
document the finishing process may not have written (it died between its commit and the write,
so before it acknowledged) is written now."""

from __future__ import annotations

from functions.push import create_push_app
from functions.worker import Worker
from htbase.messages import ArchiveRequest, build_push_envelope
from infra.db import migrate
from infra.replica import ReplicaSync, task_documents
from infra.replica_queue import ReplicaQueue
from tests.helpers import MemoryReplica, new_item, stored


def test_a_redelivery_of_finished_work_writes_the_document_a_crash_left_unwritten(settings):
    worker = Worker(settings)
    migrate(worker.engine)
    replica = MemoryReplica()
    render = task_documents(worker.ledger, worker.summaries)
    worker.replica = ReplicaSync(ReplicaQueue(worker.engine), replica, render)
    created = worker.ledger.create_task([new_item()], ["pdf"])
    worker.ledger.claim(created.task_id, "pdf", "a-process-that-died")
    worker.ledger.complete(
        created.task_id, "pdf", "a-process-that-died", stored(created.task_id), meta={}, duration_ms=1
    )  # ...and died: no replica write, no acknowledgement

    request = ArchiveRequest(created.task_id, created.children[0]["item_id"], "https://example.org/a", "pdf")
    envelope = build_push_envelope(request.to_json(), subscription="projects/p/subscriptions/htbase-archive-pdf-push")
    response = create_push_app(worker, authenticator=None).test_client().post("/push/archive", json=envelope)

    assert response.status_code == 200 and response.get_json()["status"] == "done"
    assert replica.documents[created.task_id] == render(created.task_id)[created.task_id]
    assert replica.documents[created.task_id]["status"] == "success"
    assert worker.ledger.task(created.task_id).artifacts[0].attempts == 1  # not captured again
    worker.close()
