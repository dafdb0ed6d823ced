"""Push delivery: the envelope contract, the handlers' answers, and the embedded dispatcher's redelivery."""

from __future__ import annotations

import base64
import threading

import pytest
from flask import Flask, request

from functions.push import create_push_app
from htbase.messages import ArchiveRequest, MessageError, SummarizeRequest, build_push_envelope, parse_push_envelope
from htbase.topology import DEAD_LETTER
from infra.dispatcher import LocalPushDispatcher
from infra.ledger import NewItem
from service.embedded import EmbeddedService


def test_envelope_round_trip_matches_pubsub_shape():
    envelope = build_push_envelope(b'{"a":1}', {"k": "v"}, subscription="projects/p/subscriptions/s", message_id="42")
    assert set(envelope["message"]) >= {"data", "attributes", "messageId", "publishTime"}
    assert "deliveryAttempt" not in envelope  # the emulator never sends it; nothing may depend on it
    message = parse_push_envelope(envelope)
    assert (message.data, message.attributes, message.message_id) == (b'{"a":1}', {"k": "v"}, "42")
    assert message.delivery_attempt is None
    assert parse_push_envelope(dict(envelope, deliveryAttempt=3)).delivery_attempt == 3


@pytest.mark.parametrize(
    "body, reason",
    [
        (None, "JSON object"),
        ([], "JSON object"),
        ({}, "no 'message'"),
        ({"message": "x"}, "no 'message'"),
        ({"message": {}}, "base64"),
        ({"message": {"data": "%%%"}}, "not valid base64"),
        ({"message": {"data": "eA==", "attributes": []}}, "attributes"),
        ({"message": {"data": "eA=="}, "deliveryAttempt": "2"}, "deliveryAttempt"),
    ],
)
def test_malformed_envelopes_are_refused_with_a_reason(body, reason):
    with pytest.raises(MessageError, match=reason):
        parse_push_envelope(body)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"not json", "not JSON"),
        (b"[1]", "JSON object"),
        (b"{}", "must be a non-empty string"),
        (b'{"task_id":"t","item_id":"i","url":"https://e.org","archiver":"fax"}', "unknown archiver"),
        (b'{"task_id":"t","item_id":"i","url":"https://e.org","archiver":"pdf","options":[]}', "options"),
    ],
)
def test_malformed_archive_requests_are_refused(data, reason):
    with pytest.raises(MessageError, match=reason):
        ArchiveRequest.from_json(data)


def test_messages_round_trip():
    request = ArchiveRequest("t", "i", "https://e.org", "pdf", {"timeout": 3}, "r")
    assert ArchiveRequest.from_json(request.to_json()) == request
    assert SummarizeRequest.from_json(SummarizeRequest("t", True).to_json()) == SummarizeRequest("t", True)


@pytest.fixture
def push_client(embedded_settings):
    with EmbeddedService(embedded_settings.with_(archivers=("pdf",))) as service:
        yield service, create_push_app(service.runtime, authenticator=None).test_client()


def envelope_for(data: bytes) -> dict:
    return build_push_envelope(data, subscription="projects/p/subscriptions/s")


@pytest.mark.parametrize(
    "body",
    [
        {"message": {"data": "!!"}},
        {"nothing": True},
        envelope_for(b"garbage"),
        envelope_for(ArchiveRequest("t", "i", "https://e.org", "monolith").to_json()),  # not this service's
    ],
)
def test_push_handler_answers_400_to_what_can_never_succeed(push_client, body):
    _, client = push_client
    response = client.post("/push/archive", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_message"


def test_push_for_an_unknown_task_is_acknowledged_and_dropped(push_client):
    _, client = push_client
    body = envelope_for(ArchiveRequest("no-such-task", "i", "https://e.org", "pdf").to_json())
    assert client.post("/push/archive", json=body).status_code == 200


def test_dead_letter_marks_the_artifact_failed_with_its_last_error(push_client):
    service, client = push_client
    service.dispatcher.close()  # keep the real archiver out of it
    ledger = service.runtime.ledger
    created = ledger.create_task([NewItem("https://e.org", "h" * 64)], ["pdf"])
    ledger.claim(created.task_id, "pdf", "w")
    ledger.fail(created.task_id, "pdf", "w", "HTTP 503 from origin", permanent=False)
    message = ArchiveRequest(created.task_id, created.children[0]["item_id"], "https://e.org", "pdf")
    body = build_push_envelope(
        message.to_json(),
        {"CloudPubSubDeadLetterSourceDeliveryCount": "5"},
        subscription="projects/p/subscriptions/dlq",
    )
    assert client.post("/push/dead-letter", json=body).status_code == 200
    artifact = ledger.task(created.task_id).artifacts[0]
    assert artifact.status == "failed"
    assert artifact.error == "undeliverable after 5 delivery attempts; last error: HTTP 503 from origin"
    assert client.post("/push/dead-letter", json=envelope_for(b"junk")).status_code == 200


class ScriptedPushApp:
    """A push endpoint that answers from a script and records every envelope it gets."""

    def __init__(self, answers: list[int]) -> None:
        self.answers, self.received, self.dead = list(answers), [], []
        self.app = Flask("scripted")
        self.app.add_url_rule("/work", "work", self.work, methods=["POST"])
        self.app.add_url_rule("/dead", "dead", self.dead_letter, methods=["POST"])
        self.lock = threading.Lock()

    def work(self):
        with self.lock:
            self.received.append(request.get_json())
            return ("", self.answers.pop(0) if self.answers else 200)

    def dead_letter(self):
        self.dead.append(request.get_json())
        return ("", 204)


def dispatcher_for(app: ScriptedPushApp, max_attempts: int = 4) -> LocalPushDispatcher:
    return LocalPushDispatcher(
        app.app, {"work": "/work", DEAD_LETTER: "/dead"}, workers=2, max_attempts=max_attempts, backoff_s=0.01
    )


def test_dispatcher_redelivers_after_5xx_and_429_then_stops():
    app = ScriptedPushApp([503, 429, 200])
    dispatcher = dispatcher_for(app)
    message_id = dispatcher.publish("work", b"payload", {"a": "b"}).result()
    assert dispatcher.wait_idle(5)
    assert len(app.received) == 3 and not app.dead
    assert [e["deliveryAttempt"] for e in app.received] == [1, 2, 3]
    assert {e["message"]["messageId"] for e in app.received} == {message_id}
    assert base64.b64decode(app.received[0]["message"]["data"]) == b"payload"
    assert app.received[0]["message"]["attributes"] == {"a": "b"}
    dispatcher.close()


def test_dispatcher_dead_letters_after_max_attempts():
    app = ScriptedPushApp([500] * 10)
    dispatcher = dispatcher_for(app, max_attempts=3)
    dispatcher.publish("work", b"poison", {})
    assert dispatcher.wait_idle(5)
    assert len(app.received) == 3 and len(app.dead) == 1
    attributes = app.dead[0]["message"]["attributes"]
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "3"
    assert base64.b64decode(app.dead[0]["message"]["data"]) == b"poison"
    dispatcher.close()


def test_dispatcher_dead_letters_a_4xx_at_once():
    app = ScriptedPushApp([400])
    dispatcher = dispatcher_for(app)
    dispatcher.publish("work", b"bad", {})
    assert dispatcher.wait_idle(5)
    assert len(app.received) == 1 and len(app.dead) == 1
    dispatcher.close()


def test_dispatcher_refuses_unknown_topics():
    dispatcher = dispatcher_for(ScriptedPushApp([]))
    with pytest.raises(ValueError, match="no push subscription"):
        dispatcher.publish("nowhere", b"x", {})
    dispatcher.close()
