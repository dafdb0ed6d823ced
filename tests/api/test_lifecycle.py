"""Cancel, delete and retention through the API, on SQLite and Postgres.

Cancelled captures never run, one that is running finishes (and is not retried); a delete takes the
rows, then the files (GCS, on fake-gcs-server) and the Firestore documents (the emulator), and a
storage outage only delays the files; housekeeping deletes snapshots past RETENTION_DAYS but each
item's newest."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from emulators.firestore import FirestoreEmulator
from emulators.gcs import FakeGcsServer
from functions.push import create_push_app
from htbase.messages import ArchiveRequest, build_push_envelope
from infra.models import PendingDeletion, Task, utcnow
from infra.outbox import archive_outgoing
from infra.replica import firestore_client
from tests.api.conftest import API, error_of, quiet_service

URL = "https://example.org/lifecycle"
PROJECT = "htbase-lifecycle"
BUCKET = "htbase-lifecycle"


@pytest.fixture
def service(settings):
    service = quiet_service(settings)
    yield service
    service.close()


@pytest.fixture
def client(service):
    return service.api.test_client()


def submit(client, url: str = URL) -> dict:
    response = client.post(f"{API}/archive", json={"url": url, "archivers": ["pdf", "screenshot"]})
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def finish(service, task_id: str, archiver: str) -> None:
    ledger, store = service.runtime.ledger, service.runtime.store
    ledger.claim(task_id, archiver, "test")
    stored = store.put(f"{task_id}/{archiver}.pdf", b"%PDF " + task_id.encode(), "application/pdf")
    extras = {"extras": {"txt": store.put(f"{task_id}/{archiver}.txt", b"text", "text/plain").key}}
    assert ledger.complete(task_id, archiver, "test", stored, meta=extras, duration_ms=1) is not None


def statuses(client, task_id: str) -> tuple[str, dict[str, str]]:
    document = client.get(f"{API}/tasks/{task_id}").get_json()
    return document["status"], {name: sub["status"] for name, sub in document["subtasks"].items()}


def test_cancelled_before_capture_nothing_runs(service, client):
    task = submit(client)
    response = client.post(f"{API}/tasks/{task['task_id']}/cancel")
    assert response.status_code == 200
    assert response.get_json()["status"] == "cancelled"
    assert statuses(client, task["task_id"]) == ("cancelled", {"pdf": "cancelled", "screenshot": "cancelled"})
    assert client.post(f"{API}/tasks/{task['task_id']}/cancel").status_code == 200  # asked twice: still cancelled

    # The capture's message still arrives: the push handler acknowledges it and captures nothing.
    request = ArchiveRequest(task["task_id"], task["item_id"], URL, "pdf")
    envelope = build_push_envelope(request.to_json(), archive_outgoing(request).attributes, subscription="s")
    push = create_push_app(service.runtime, authenticator=None).test_client()
    answer = push.post("/push/archive", data=json.dumps(envelope), content_type="application/json")
    assert (answer.status_code, answer.get_json()["status"]) == (200, "done")
    assert client.get(f"{API}/tasks/{task['task_id']}").get_json()["subtasks"]["pdf"]["attempts"] == 0


def test_cancelled_during_capture_what_runs_finishes_and_is_kept(service, client):
    task_id = submit(client)["task_id"]
    ledger = service.runtime.ledger
    assert ledger.claim(task_id, "pdf", "test").outcome == "claimed"  # the PDF is being made
    assert client.post(f"{API}/tasks/{task_id}/cancel").status_code == 200
    assert statuses(client, task_id) == ("processing", {"pdf": "processing", "screenshot": "cancelled"})
    stored = service.runtime.store.put(f"{task_id}/pdf.pdf", b"%PDF", "application/pdf")
    assert ledger.complete(task_id, "pdf", "test", stored, meta={}, duration_ms=1) is not None
    assert statuses(client, task_id) == ("partial", {"pdf": "success", "screenshot": "cancelled"})
    assert client.get(f"{API}/archives/{task_id}/pdf").data == b"%PDF"
    assert client.post(f"{API}/tasks/{task_id}/cancel").get_json()["status"] == "partial"  # asked again: as it is

    done = submit(client, f"{URL}/done")["task_id"]
    for archiver in ("pdf", "screenshot"):
        finish(service, done, archiver)
    assert error_of(client.post(f"{API}/tasks/{done}/cancel")) == (409, "finished")


def test_a_capture_that_fails_after_its_task_was_cancelled_is_not_retried(service, client):
    task_id = submit(client)["task_id"]
    ledger = service.runtime.ledger
    ledger.claim(task_id, "pdf", "test")
    client.post(f"{API}/tasks/{task_id}/cancel")
    assert ledger.fail(task_id, "pdf", "test", "timed out", permanent=False)  # final: no retry
    assert statuses(client, task_id) == ("cancelled", {"pdf": "cancelled", "screenshot": "cancelled"})
    assert ledger.claim(task_id, "pdf", "other").outcome == "done"


def test_a_batch_is_cancelled_whole_and_unknown_tasks_are_404(client):
    response = client.post(
        f"{API}/archive/batch", json={"items": [{"url": f"{URL}/{n}"} for n in range(3)], "archivers": ["pdf"]}
    )
    batch = response.get_json()
    cancelled = client.post(f"{API}/tasks/{batch['task_id']}/cancel").get_json()
    assert cancelled["status"] == "cancelled" and {t["status"] for t in cancelled["items"]} == {"cancelled"}
    assert error_of(client.post(f"{API}/tasks/0f0f0f0f-0000-0000-0000-000000000000/cancel")) == (404, "not_found")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with FakeGcsServer(data_dir=tmp_path_factory.mktemp("gcs")) as server:  # objects outlive a restart
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="module")
def firestore():
    with FirestoreEmulator() as server:
        yield server


@pytest.fixture
def cloudy(settings, gcs, firestore):
    """The quiet service with its files on GCS and its documents replicated to Firestore."""
    gcs.start()  # a test that stopped it may have failed before starting it again
    firestore.reset(PROJECT)
    service = quiet_service(
        settings.with_(
            file_storage_provider="gcs",
            gcs_bucket=BUCKET,
            storage_emulator_host=gcs.endpoint,
            firestore_project_id=PROJECT,
            firestore_emulator_host=firestore.host,
        )
    )
    yield service
    service.close()


def files(service, task_id: str) -> list[str]:
    bucket = service.runtime.store.bucket
    return sorted(blob.name for blob in bucket.client.list_blobs(bucket, prefix=f"{task_id}/"))


def replicated(service, task_id: str) -> bool:
    settings = service.runtime.settings
    collection = firestore_client(settings).collection(settings.firestore_collection)
    return collection.document(task_id).get().exists


def test_a_delete_takes_rows_files_and_documents_and_a_second_is_404(cloudy):
    client = cloudy.api.test_client()
    first, second = submit(client), submit(client)
    for task in (first, second):
        finish(cloudy, task["task_id"], "pdf")
        cloudy.runtime.replica.sync(task["task_id"])
        assert replicated(cloudy, task["task_id"]) and files(cloudy, task["task_id"])

    assert client.delete(f"{API}/tasks/{first['task_id']}").status_code == 204
    assert error_of(client.get(f"{API}/tasks/{first['task_id']}")) == (404, "not_found")
    assert files(cloudy, first["task_id"]) == [] and not replicated(cloudy, first["task_id"])
    assert files(cloudy, second["task_id"]) == [f"{second['task_id']}/pdf.pdf", f"{second['task_id']}/pdf.txt"]
    assert error_of(client.delete(f"{API}/tasks/{first['task_id']}")) == (404, "not_found")
    assert client.get(f"{API}/items/{first['item_id']}").get_json()["snapshots_count"] == 1

    assert client.delete(f"{API}/items/{first['item_id']}").status_code == 204
    assert error_of(client.get(f"{API}/items/{first['item_id']}")) == (404, "not_found")
    assert error_of(client.get(f"{API}/tasks/{second['task_id']}")) == (404, "not_found")
    assert files(cloudy, second["task_id"]) == [] and not replicated(cloudy, second["task_id"])
    assert error_of(client.delete(f"{API}/items/{first['item_id']}")) == (404, "not_found")


def test_a_delete_during_a_storage_outage_takes_the_files_once_storage_is_back(cloudy, gcs):
    client = cloudy.api.test_client()
    task = submit(client)
    finish(cloudy, task["task_id"], "pdf")
    gcs.stop()
    try:
        assert client.delete(f"{API}/tasks/{task['task_id']}").status_code == 204  # the rows go at once
        assert error_of(client.get(f"{API}/tasks/{task['task_id']}")) == (404, "not_found")
        with cloudy.runtime.ledger.session() as session:
            [pending] = session.scalars(select(PendingDeletion))
        assert (pending.prefix, pending.attempts) == (f"{task['task_id']}/", 1) and pending.last_error
    finally:
        gcs.start()
    assert files(cloudy, task["task_id"])  # still there: the removal waits for its retry
    with cloudy.runtime.ledger.session() as session, session.begin():  # its retry is due now
        session.execute(update(PendingDeletion).values(next_attempt_at=utcnow()))
    assert cloudy.runtime.housekeep()["files_removed"] == 1
    assert files(cloudy, task["task_id"]) == []
    with cloudy.runtime.ledger.session() as session:
        assert session.scalar(select(func.count()).select_from(PendingDeletion)) == 0


def test_a_capture_finishing_after_its_task_was_deleted_leaves_no_file(cloudy):
    client = cloudy.api.test_client()
    task_id = submit(client)["task_id"]
    ledger, store = cloudy.runtime.ledger, cloudy.runtime.store
    ledger.claim(task_id, "pdf", "test")
    assert client.delete(f"{API}/tasks/{task_id}").status_code == 204
    stored = store.put(f"{task_id}/pdf.pdf", b"%PDF late", "application/pdf")  # the capture was running
    assert ledger.complete(task_id, "pdf", "test", stored, meta={}, duration_ms=1) is None
    cloudy.runtime.housekeep()
    assert files(cloudy, task_id) == []


def test_retention_deletes_old_snapshots_but_each_items_newest(service, client):
    newest, oldest, alone = submit(client), submit(client), submit(client, f"{URL}/other")
    older = submit(client)
    with service.runtime.ledger.session() as session, session.begin():
        for task, age in ((newest, 40), (oldest, 50), (alone, 60), (older, 45)):
            session.get(Task, task["task_id"]).created_at -= timedelta(days=age)
    service.runtime.settings = service.runtime.settings.with_(retention_days=30)
    assert service.runtime.housekeep()["expired"] == 2
    assert sorted(t["task_id"] for t in client.get(f"{API}/tasks").get_json()["tasks"]) == sorted(
        [newest["task_id"], alone["task_id"]]
    )  # each item's newest, however old
    assert service.runtime.housekeep()["expired"] == 0
