"""Webhooks on the embedded service (its dispatcher, the push handler Cloud Run runs), on SQLite and Postgres:
one signed delivery per task once everything it reports is stored, retried on 5xx and 429 only, and never
sent where the egress guard refuses."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest

from functions.push import create_push_app
from htbase.messages import ArchiveRequest, WebhookRequest, build_push_envelope
from infra.documents import task_view
from infra.ledger import NewItem
from infra.models import WebhookDelivery
from infra.outbox import archive_outgoing
from service.embedded import EmbeddedService
from tests.helpers import wait_for
from tests.receiver import SECRET, Receiver, verified

ARCHIVERS = ("pdf", "screenshot")


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def embedded(settings, **changes) -> EmbeddedService:
    """The embedded service (``with`` starts it); nothing is captured unless a test sends the archive
    messages itself."""
    return EmbeddedService(
        settings.with_(
            **{
                "webhook_secret": SECRET,
                "retry_backoff_s": 0.05,
                "sweep_interval_s": 3600,
                "archivers": ARCHIVERS,
                **changes,
            }
        )
    )


@pytest.fixture
def service(settings):
    with embedded(settings) as service:
        yield service


def accept(service, webhook_url: str, url: str = "https://example.org/page", archivers=ARCHIVERS) -> str:
    return service.runtime.ledger.create_task(
        [NewItem(url, url.rsplit("/", 1)[-1] * 8)], archivers, webhook_url=webhook_url
    ).task_id


def finish(service, task_id: str, archiver: str) -> None:
    """A capture stored and recorded, as a push handler records it."""
    runtime = service.runtime
    assert runtime.ledger.claim(task_id, archiver, "test").outcome == "claimed"
    stored = runtime.store.put(f"{task_id}/{archiver}.bin", b"%PDF-1.4 captured", "application/pdf")
    assert runtime.ledger.complete(task_id, archiver, "test", stored, meta={}, duration_ms=1) is not None


def document(service, task_id: str) -> dict:
    return task_view(service.runtime.ledger.task(task_id))


def settled(service) -> None:
    """Every message delivered, every held-back attempt made."""
    assert service.dispatcher.wait_idle(60)


def test_one_signed_webhook_once_every_format_is_stored(service, receiver):
    task_id = accept(service, receiver.url("/hook"))
    finish(service, task_id, "pdf")
    settled(service)
    assert receiver.at("/hook") == []  # the screenshot is not stored yet: nothing may be announced
    assert document(service, task_id)["webhook"] == {"status": "waiting", "attempts": 0}

    finish(service, task_id, "screenshot")
    [hook] = receiver.wait("/hook")
    body = verified(hook)
    assert body["event"] == "task.completed" and body["task_id"] == task_id and body["status"] == "success"
    assert set(body["subtasks"]) == set(ARCHIVERS) and all(s["status"] == "success" for s in body["subtasks"].values())
    assert hook.headers["content-type"] == "application/json"
    assert hook.headers["webhook-id"].startswith("msg_")
    settled(service)
    webhook = document(service, task_id)["webhook"]
    assert webhook["status"] == "delivered" and webhook["attempts"] == 1 and webhook["last_status"] == 204
    assert webhook["id"] == hook.headers["webhook-id"] and webhook["delivered_at"]
    assert receiver.at("/hook") == [hook]
    wait_for(
        lambda: not [row for row in service.runtime.outbox.unsent() if row.topic == "webhooks"],
        what="the webhook's outbox row marked sent",
    )


def test_retried_on_a_5xx_with_the_same_id_then_delivered(service, receiver):
    receiver.answers["/flaky"] = [500, 503, 200]
    task_id = accept(service, receiver.url("/flaky"), archivers=["pdf"])
    finish(service, task_id, "pdf")
    hooks = receiver.wait("/flaky", 3)
    settled(service)
    assert len({hook.headers["webhook-id"] for hook in hooks}) == 1
    assert all(verified(hook)["task_id"] == task_id for hook in hooks)
    webhook = document(service, task_id)["webhook"]
    assert (webhook["status"], webhook["attempts"], webhook["last_status"]) == ("delivered", 3, 200)
    assert len(receiver.at("/flaky")) == 3


def test_a_429_is_retried_and_a_410_is_not(service, receiver):
    receiver.answers["/busy"] = [(429, {"Retry-After": "1"}), 204]
    receiver.answers["/gone"] = [410]
    busy = accept(service, receiver.url("/busy"), "https://example.org/busy", archivers=["pdf"])
    gone = accept(service, receiver.url("/gone"), "https://example.org/gone", archivers=["pdf"])
    finish(service, busy, "pdf")
    finish(service, gone, "pdf")
    receiver.wait("/busy", 2)
    settled(service)
    assert len(receiver.at("/gone")) == 1
    webhook = document(service, gone)["webhook"]
    assert (webhook["status"], webhook["attempts"], webhook["last_status"]) == ("failed", 1, 410)
    assert document(service, busy)["webhook"]["status"] == "delivered"


def test_no_redirect_is_followed(service, receiver):
    receiver.answers["/moved"] = [(307, {"Location": receiver.url("/elsewhere")})]
    task_id = accept(service, receiver.url("/moved"), archivers=["pdf"])
    finish(service, task_id, "pdf")
    receiver.wait("/moved")
    settled(service)
    assert receiver.at("/elsewhere") == []
    webhook = document(service, task_id)["webhook"]
    assert (webhook["status"], webhook["last_status"]) == ("failed", 307)


def test_a_receiver_that_does_not_answer_is_tried_until_the_attempts_run_out(settings, receiver):
    with embedded(settings, webhook_max_attempts=3, webhook_timeout_s=0.5) as service:
        closed = Receiver()
        url = closed.url("/nobody")
        closed.close()  # the port refuses connections now
        task_id = accept(service, url, archivers=["pdf"])
        finish(service, task_id, "pdf")
        settled(service)
        webhook = document(service, task_id)["webhook"]
    assert (webhook["status"], webhook["attempts"], webhook["last_status"]) == ("failed", 3, None)
    assert "Connection" in webhook["last_error"] or "refused" in webhook["last_error"]


def test_the_egress_guard_refuses_a_private_receiver(settings, receiver):
    with embedded(settings, allow_private_urls=False) as service:
        task_id = accept(service, receiver.url("/private"), archivers=["pdf"])
        finish(service, task_id, "pdf")
        settled(service)
        webhook = document(service, task_id)["webhook"]
    assert receiver.at("/private") == []
    assert (webhook["status"], webhook["attempts"], webhook["last_status"]) == ("failed", 1, None)
    assert "127.0.0.1" in webhook["last_error"] and "loopback" in webhook["last_error"]


def test_a_batch_sends_one_webhook_when_its_last_task_ends(service, receiver):
    ledger = service.runtime.ledger
    batch = ledger.create_task(
        [NewItem(f"https://example.org/{n}", f"{n}" * 8) for n in "abc"],
        ["pdf"],
        webhook_url=receiver.url("/batch"),
        batch=True,
    )
    for child in batch.children:
        finish(service, child["task_id"], "pdf")
    [hook] = receiver.wait("/batch")
    body = verified(hook)
    assert body["task_id"] == batch.task_id and body["kind"] == "batch" and len(body["items"]) == 3
    settled(service)
    assert len(receiver.at("/batch")) == 1


def test_formats_ending_at_once_announce_the_task_once(service, receiver):
    """Every archiver of a task finishes in its own transaction at the same moment: exactly one of them
    sees the task end (on Postgres, concurrently; SQLite takes them one at a time)."""
    tasks = [accept(service, receiver.url("/race"), f"https://example.org/race{n}") for n in range(6)]
    for task_id in tasks:
        for archiver in ARCHIVERS:
            assert service.runtime.ledger.claim(task_id, archiver, "test").outcome == "claimed"
    start = threading.Barrier(len(ARCHIVERS))

    def complete(task_id: str, archiver: str) -> None:
        stored = service.runtime.store.put(f"{task_id}/{archiver}.bin", b"x", "application/pdf")
        start.wait()
        service.runtime.ledger.complete(task_id, archiver, "test", stored, meta={}, duration_ms=1)

    for task_id in tasks:
        threads = [threading.Thread(target=complete, args=(task_id, archiver)) for archiver in ARCHIVERS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    hooks = receiver.wait("/race", len(tasks))
    settled(service)
    assert (
        sorted(verified(hook)["task_id"] for hook in receiver.at("/race"))
        == sorted(tasks)
        == sorted(hook.body["task_id"] for hook in hooks)
    )
    with service.runtime.ledger.session() as session:
        assert session.query(WebhookDelivery).count() == len(tasks)


def test_a_redelivered_push_sends_no_second_webhook(settings, receiver, test_site):
    """A real capture (the built-in inliner) ends the task; its push delivered again changes nothing."""
    with embedded(settings, archivers=("monolith",)) as service:
        ledger = service.runtime.ledger
        url = test_site.url("/article.html")
        created = ledger.create_task([NewItem(url, "redelivered" * 4)], ["monolith"], webhook_url=receiver.url("/once"))
        service.runtime.relay.send(created.outbox)
        [hook] = receiver.wait("/once")
        assert verified(hook)["subtasks"]["monolith"]["status"] == "success"
        child = created.children[0]
        request = ArchiveRequest(created.task_id, child["item_id"], url, "monolith")
        push = create_push_app(service.runtime, authenticator=None).test_client()
        envelope = build_push_envelope(
            request.to_json(),
            archive_outgoing(request).attributes,
            subscription="projects/local/subscriptions/archive-monolith",
        )
        for _ in range(2):
            assert (
                push.post("/push/archive", data=json.dumps(envelope), content_type="application/json").status_code
                == 200
            )
        settled(service)
        assert len(receiver.at("/once")) == 1
        assert document(service, created.task_id)["webhook"]["attempts"] == 1


def test_a_webhook_url_is_refused_where_no_webhook_can_be_signed(settings, receiver):
    body = {"url": "https://example.org/page", "archivers": ["pdf"], "webhook_url": receiver.url("/hook")}
    with embedded(settings, webhook_secret="") as service:
        refused = service.api.test_client().post("/api/v2/archive", json=body)
    assert refused.status_code == 400 and refused.get_json()["error"]["code"] == "webhooks_off"
    assert "WEBHOOK_SECRET" in refused.get_json()["error"]["message"]
    with embedded(settings) as service:
        service.dispatcher.close()  # accepted, and never captured
        assert service.api.test_client().post("/api/v2/archive", json=body).status_code == 202


def test_an_attempt_whose_message_got_lost_is_asked_for_again_by_housekeeping(settings, receiver):
    with embedded(settings) as service:
        runtime = service.runtime
        # The attempt's message is handed over, then lost (a queue emptied by a restart, say).
        runtime.ledger.announce = lambda rows: runtime.outbox.mark_sent([row.id for row in rows])
        task_id = accept(service, receiver.url("/lost"), archivers=["pdf"])
        finish(service, task_id, "pdf")
        delivery_id = document(service, task_id)["webhook"]["id"]
        # Where a transport gives up on an attempt (the embedded dispatcher dead-letters it), nothing is recorded.
        envelope = build_push_envelope(WebhookRequest(delivery_id).to_json(), subscription="dead-letter")
        push = create_push_app(runtime, authenticator=None).test_client()
        answer = push.post("/push/dead-letter", data=json.dumps(envelope), content_type="application/json")
        assert (answer.status_code, answer.get_json()["status"]) == (200, "left to housekeeping")
        assert runtime.housekeep()["webhooks_resent"] == 0  # not overdue yet
        with runtime.ledger.session() as session, session.begin():
            session.get(WebhookDelivery, delivery_id).next_attempt_at -= timedelta(seconds=settings.lease_s + 1)
        assert runtime.housekeep()["webhooks_resent"] == 1
        verified(receiver.wait("/lost")[0])
        settled(service)
        assert document(service, task_id)["webhook"]["status"] == "delivered"
