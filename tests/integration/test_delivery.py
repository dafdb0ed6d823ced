"""Issue 3's delivery guarantees, against the real emulators with every service as its own process.

One stack for the module: the Pub/Sub, Firestore, GCS and Cloud Tasks
emulators, a throwaway Postgres, the API and one push service per archiver,
the summarizer and the dead-letter handler.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid

import pytest
import requests
import sqlalchemy as sa

from emulators.bootstrap import pubsub_clients
from emulators.stack import Stack
from htbase.messages import ArchiveRequest
from htbase.topology import topic_name
from infra.replica import firestore_client
from infra.storage import gcs_client
from tests.helpers import API, ARCHIVE_FILES, HttpApi, finished, submit, task, wait_for


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    overrides = {
        "ALLOW_PRIVATE_URLS": "1",
        "LEASE_SECONDS": "6",  # a killed capture is taken over within seconds
        "SWEEP_INTERVAL_SECONDS": "1",
        "MAX_ATTEMPTS": "20",  # transient failures are left to the subscription's dead-letter policy
        "MAX_DELIVERY_ATTEMPTS": "5",
        "RETRY_BACKOFF_SECONDS": "0.5",
    }
    with Stack(tmp_path_factory.mktemp("delivery"), overrides=overrides) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack) -> HttpApi:
    return HttpApi(stack.api_url)


def log_lines(stack, service: str, task_id: str) -> list[dict]:
    lines = (stack.root / "logs" / f"{service}.log").read_text(errors="replace").splitlines()
    entries = []
    for line in lines:
        if task_id in line and line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def firestore_doc(stack, task_id: str) -> dict | None:
    snapshot = firestore_client(stack.settings).collection("tasks").document(task_id).get(timeout=5)
    return snapshot.to_dict() if snapshot.exists else None


def test_a_url_is_archived_five_ways_into_gcs_postgres_and_firestore(stack, api, test_site):
    task_id = submit(api, test_site.url("/article.html"), item_id=f"it-{uuid.uuid4().hex[:6]}")
    result = finished(api, task_id)
    assert result["status"] == "success", result
    assert all(sub["attempts"] == 1 for sub in result["subtasks"].values())

    names = {blob.name for blob in gcs_client(stack.settings).bucket("htbase-archives").list_blobs(prefix=task_id)}
    assert names == {f"{task_id}/{n}" for n in ARCHIVE_FILES}
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT archiver, status, sha256 FROM artifacts WHERE task_id = :t"), {"t": task_id}
        ).all()
    engine.dispose()
    assert {(r.archiver, r.status) for r in rows} == {(n, "success") for n in result["subtasks"]}
    rows_sha256 = {r.archiver: r.sha256 for r in rows}
    assert requests.get(f"{stack.api_url}{API}/archives/{task_id}/pdf", timeout=10).content.startswith(b"%PDF")
    for name, sub in result["subtasks"].items():  # text is stored gzipped on GCS: served as captured
        served = api.get(f"{API}/archives/{task_id}/{name}").content
        assert hashlib.sha256(served).hexdigest() == sub["artifact"]["sha256"] == rows_sha256[name], name
        assert len(served) == sub["artifact"]["size"], name

    # The summarizer service follows the readable article, and the replica follows both.
    summary = wait_for(
        lambda: (
            (r := requests.get(f"{stack.api_url}{API}/summaries/{task_id}", timeout=10)).status_code == 200 and r.json()
        ),
        60,
        "the summary",
    )
    assert summary["status"] == "success" and summary["lede"] and 3 <= len(summary["key_points"]) <= 7
    document = wait_for(
        lambda: (d := firestore_doc(stack, task_id)) and d.get("summary") and d,
        30,
        "the replica document with its summary",
    )
    assert document["status"] == "success" and set(document["subtasks"]) == set(result["subtasks"])


def test_a_transient_failure_is_redelivered_and_finishes(api, test_site):
    task_id = submit(api, test_site.url(f"/flaky?key={uuid.uuid4().hex}"), archivers=["monolith"])
    result = finished(api, task_id, 60)
    assert result["status"] == "success", result
    assert result["subtasks"]["monolith"]["attempts"] == 2


def test_a_poison_message_is_dead_lettered_and_the_artifact_failed_with_its_error(api, test_site):
    task_id = submit(api, test_site.url("/server-error"), archivers=["monolith"])
    result = finished(api, task_id, 120)
    sub = result["subtasks"]["monolith"]
    assert result["status"] == "failed"
    assert sub["error"].startswith("undeliverable after 5 delivery attempts; last error: HTTP 500"), sub


def test_the_same_request_published_twice_is_captured_once(stack, api, test_site):
    url = test_site.url(f"/article.html?dup={uuid.uuid4().hex}")
    task_id = submit(api, url, archivers=["pdf"])
    item_id = task(api, task_id)["item_id"]
    publisher, _ = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    topic = publisher.topic_path(stack.settings.pubsub_project_id, topic_name("htbase-", "pdf"))
    message = ArchiveRequest(task_id, item_id, url, "pdf").to_json()
    for _ in range(2):
        publisher.publish(topic, message).result(timeout=10)
    result = finished(api, task_id)
    assert result["status"] == "success" and result["subtasks"]["pdf"]["attempts"] == 1
    wait_for(
        lambda: (
            len([e for e in log_lines(stack, "archiver-pdf", task_id) if e["message"].startswith("delivery skipped")])
            == 2
        ),
        30,
        "both duplicates acked",
    )
    started = [e for e in log_lines(stack, "archiver-pdf", task_id) if e["message"] == "capture started"]
    assert len(started) == 1


def test_a_capture_killed_midway_completes_after_its_lease_expires(stack, api, test_site):
    task_id = submit(api, test_site.url(f"/delay?s=4&k={uuid.uuid4().hex}"), archivers=["monolith"])
    wait_for(lambda: task(api, task_id)["subtasks"]["monolith"]["status"] == "processing", 30, "the capture")
    stack.kill("archiver-monolith")  # the supervisor starts it again, as Cloud Run replaces an instance
    result = finished(api, task_id, 90)
    assert result["status"] == "success", result
    assert result["subtasks"]["monolith"]["attempts"] == 2


def test_tasks_succeed_while_firestore_is_down_and_the_replica_catches_up(stack, api, test_site):
    stack.stop("firestore")
    try:
        task_id = submit(api, test_site.url(f"/article.html?fs={uuid.uuid4().hex}"), archivers=["monolith"])
        assert finished(api, task_id, 60)["status"] == "success"
    finally:
        stack.start("firestore")
    # A write sent while Firestore was frozen lands when it resumes: it must not put an old state back.
    wait_for(lambda: (firestore_doc(stack, task_id) or {}).get("status") == "success", 90, "the replica to catch up")


def test_submissions_while_pubsub_is_down_are_accepted_and_finish_when_it_returns(stack, api, test_site):
    stack.stop("pubsub")
    try:
        started = time.monotonic()
        task_ids = [
            submit(api, test_site.url(f"/article.html?ps={n}-{uuid.uuid4().hex}"), archivers=["monolith"])
            for n in range(5)
        ]
        accepted_in = time.monotonic() - started
        assert all(task(api, t)["status"] == "pending" for t in task_ids)
    finally:
        stack.start("pubsub")
    for task_id in task_ids:
        assert finished(api, task_id, 90)["status"] == "success"
    assert accepted_in < 30, f"five submissions took {accepted_in:.1f}s while the broker was down"


def test_postgres_down_means_503_and_nothing_half_written(stack):
    engine = sa.create_engine(stack.env["DATABASE_URL"])

    def counts():
        with engine.connect() as connection:
            return [
                connection.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                for t in ("tasks", "artifacts", "outbox")
            ]

    before = counts()
    engine.dispose()
    stack.stop("postgres")
    try:
        response = requests.post(f"{stack.api_url}{API}/archive", json={"url": "https://example.org/x"}, timeout=30)
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert requests.get(f"{stack.api_url}/healthz", timeout=30).status_code == 503
    finally:
        stack.start("postgres")
    assert counts() == before
    engine.dispose()
    assert requests.get(f"{stack.api_url}/healthz", timeout=30).status_code == 200
