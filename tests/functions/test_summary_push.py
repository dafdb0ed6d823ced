"""The summarizer's push answers: a long Retry-After answered 429, the fallback on the last delivery
(known without the deliveryAttempt the emulator never sends), and summarize dead letters recorded on
the summary. A real push app, a real ledger, an OpenAI-compatible stub that is rate limited."""

from __future__ import annotations

import hashlib

import pytest

from functions.push import create_push_app
from functions.summarizer.pipeline import cache_key
from functions.worker import Worker
from htbase.messages import SummarizeRequest, build_push_envelope
from infra.db import migrate
from infra.ledger import NewItem
from infra.replica import ReplicaSync, task_documents
from infra.replica_queue import ReplicaQueue
from tests.functions.summarizer import articles
from tests.functions.summarizer.stub_llm import Reply, StubLLM, good_chat
from tests.helpers import MemoryReplica

RATE_LIMITED = Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "120"})


@pytest.fixture
def stub():
    server = StubLLM()
    server.respond = lambda call: RATE_LIMITED
    yield server
    server.close()


@pytest.fixture
def worker(settings, stub):
    # MAX_ATTEMPTS (the ledger's captures) is not what counts for a push: the subscription's
    # MAX_DELIVERY_ATTEMPTS is.
    chain = settings.with_(
        llm_providers=("openai", "extractive"),
        llm_base_url=stub.url,
        llm_model="stub-model",
        llm_requests_per_minute=0,
        llm_timeout_s=5,
        max_attempts=2,
        max_delivery_attempts=5,
    )
    worker = Worker(chain)
    migrate(worker.engine)
    yield worker
    worker.close()


@pytest.fixture
def client(worker):
    return create_push_app(worker, authenticator=None).test_client()


def readable_task(worker: Worker, n: int = 0) -> str:
    """A task whose readability capture succeeded, as the archiver records it."""
    ledger, url = worker.ledger, f"https://example.org/article-{n}"
    task_id = ledger.create_task([NewItem(url, f"{n:064d}")], ["readability"]).task_id
    ledger.claim(task_id, "readability", "archiver")
    text = worker.store.put(f"{task_id}/readability.txt", articles.ENGLISH.encode(), "text/plain; charset=utf-8")
    html = worker.store.put(f"{task_id}/readability.html", b"<article>...</article>", "text/html")
    ledger.complete(
        task_id,
        "readability",
        "archiver",
        html,
        duration_ms=1,
        meta={"title": articles.ENGLISH_TITLE, "language": "en", "extras": {"txt": text.key}},
    )
    return task_id


def push(client, path: str, task_id: str, delivery_attempt: int | None = None, force: bool = False, **attributes: str):
    envelope = build_push_envelope(
        SummarizeRequest(task_id, force).to_json(),
        attributes,
        delivery_attempt=delivery_attempt,
        subscription="projects/p/subscriptions/htbase-summarize-push",
    )
    return client.post(path, json=envelope)


def primary_key(worker: Worker) -> str:
    """The key the chain's first provider files the article's summary under."""
    text_sha256 = hashlib.sha256(articles.ENGLISH.encode()).hexdigest()
    return cache_key(text_sha256, worker.summarizer.model_id, worker.summarizer.prompt_version)


def summary_of(worker: Worker, task_id: str):
    task = worker.ledger.task(task_id)
    return worker.summaries.get(task.summary_key) if task.summary_key else None


def test_a_long_retry_after_is_answered_429_until_the_last_delivery_which_falls_back(worker, client, stub):
    task_id = readable_task(worker)
    for delivery in range(1, 5):  # as the emulator pushes: no deliveryAttempt in the envelope
        response = push(client, "/push/summarize", task_id)
        assert response.status_code == 429, (delivery, response.get_json())
        assert 100 < int(response.headers["Retry-After"]) <= 120  # what is left of the provider's 120 s
        pending = summary_of(worker, task_id)
        assert (pending.status, pending.deliveries) == ("pending", delivery)
        assert "rate limited" in pending.error
    assert stub.calls, "the provider was asked"

    last = push(client, "/push/summarize", task_id)  # the fifth of MAX_DELIVERY_ATTEMPTS
    assert last.status_code == 200 and last.get_json()["status"] == "stored"
    summary = summary_of(worker, task_id)
    assert summary.status == "success" and summary.model == "extractive-v1" and summary.result["lede"]


def test_the_push_attempt_number_says_the_last_delivery_where_pubsub_sends_it(worker, client):
    task_id = readable_task(worker)
    assert push(client, "/push/summarize", task_id, delivery_attempt=4).status_code == 429
    assert push(client, "/push/summarize", task_id, delivery_attempt=5).status_code == 200
    assert summary_of(worker, task_id).model == "extractive-v1"


def test_after_a_fallback_the_next_request_waits_for_the_primary_again(worker, client):
    """The fallback's summary is filed under its own model; the primary's count starts afresh, so
    a later request is not taken for a last delivery."""
    task_id = readable_task(worker)
    assert push(client, "/push/summarize", task_id, delivery_attempt=5).status_code == 200
    assert summary_of(worker, task_id).model == "extractive-v1"
    again = push(client, "/push/summarize", task_id)
    assert again.status_code == 429
    assert summary_of(worker, task_id).model == "extractive-v1"  # shown until the primary's is made
    primary = worker.summaries.get(primary_key(worker))
    assert (primary.status, primary.deliveries) == ("pending", 1)


def test_a_summarize_dead_letter_fails_the_summary_with_the_last_error(worker, client):
    task_id = readable_task(worker)
    assert push(client, "/push/summarize", task_id).status_code == 429
    dead = push(client, "/push/dead-letter", task_id, CloudPubSubDeadLetterSourceDeliveryCount="5")
    assert dead.status_code == 200 and dead.get_json()["status"] == "dead-lettered"
    summary = summary_of(worker, task_id)
    assert summary.status == "failed" and summary.deliveries == 0
    assert summary.error == "undeliverable after 5 delivery attempts; last error: rate limited; retry after 120.0s"


def test_a_summarize_dead_letter_that_never_reached_the_summarizer_still_fails_a_summary(worker, client):
    """The summarizer was down for every delivery: the summary it would have filed is failed."""
    task_id = readable_task(worker)
    dead = push(client, "/push/dead-letter", task_id, CloudPubSubDeadLetterSourceDeliveryCount="5")
    assert dead.status_code == 200
    summary = summary_of(worker, task_id)
    assert summary.status == "failed" and summary.error == "undeliverable after 5 delivery attempts"
    assert summary.cache_key == primary_key(worker)  # filed where the summarizer would have filed it


def test_a_summarize_dead_letter_leaves_a_made_summary_alone(worker, client):
    task_id = readable_task(worker)
    assert push(client, "/push/summarize", task_id, delivery_attempt=5).status_code == 200
    assert push(client, "/push/summarize", task_id).status_code == 429  # a later request for the primary's
    assert push(client, "/push/dead-letter", task_id, CloudPubSubDeadLetterSourceDeliveryCount="5").status_code == 200
    assert summary_of(worker, task_id).status == "success"


def test_a_summary_made_again_is_shown_in_every_task_of_its_article(worker, client, stub):
    """Two captures of one article share its summary: when it changes, both documents follow."""
    stub.respond = lambda call: good_chat()
    replica = MemoryReplica()
    render = task_documents(worker.ledger, worker.summaries)
    worker.replica = ReplicaSync(ReplicaQueue(worker.engine), replica, render)
    first, second = readable_task(worker, 1), readable_task(worker, 2)
    assert push(client, "/push/summarize", first).status_code == 200
    assert push(client, "/push/summarize", second).status_code == 200  # the same article: reused
    assert summary_of(worker, first).cache_key == summary_of(worker, second).cache_key

    stub.respond = lambda call: good_chat(lede="A newer lede, after the article was summarized again.")
    assert push(client, "/push/summarize", second, force=True).status_code == 200
    for task_id in (first, second):
        assert replica.documents[task_id] == render(task_id)[task_id]
        assert replica.documents[task_id]["summary"]["lede"].startswith("A newer lede")
