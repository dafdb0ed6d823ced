"""The real Pub/Sub and Cloud Tasks emulators, and the bootstrap that lays the topology on them."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core.exceptions import NotFound

from emulators.bootstrap import bootstrap, pubsub_clients, topology
from emulators.cloudtasks import CloudTasksEmulator, tasks_client
from emulators.gcs import FakeGcsServer
from emulators.process import alive, http_answers, listeners
from emulators.pubsub import PubSubEmulator
from htbase.config import Settings
from htbase.topology import PUSH_SERVICES
from infra.storage import gcs_client

PROJECT = "htbase-local"
TOKEN = "s3cret-token"
ARCHIVE_TOPICS = [
    "htbase-archive-singlefile",
    "htbase-archive-monolith",
    "htbase-archive-readability",
    "htbase-archive-pdf",
    "htbase-archive-screenshot",
]


@pytest.fixture(scope="module")
def pubsub():
    with PubSubEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def tasks():
    with CloudTasksEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def gcs():
    with FakeGcsServer() as server:
        yield server


@pytest.fixture(scope="module")
def settings(pubsub, gcs) -> Settings:
    return Settings(
        pubsub_emulator_host=pubsub.host,
        pubsub_project_id=PROJECT,
        push_auth_token=TOKEN,
        file_storage_provider="gcs",
        gcs_bucket="htbase-archives",
        storage_emulator_host=gcs.endpoint,
        max_attempts=5,
        retry_backoff_s=0.1,
    )


@pytest.fixture(scope="module")
def endpoints(receiver) -> dict[str, str]:
    return {service: receiver.url(f"/{service}") for service in PUSH_SERVICES}


@pytest.fixture(scope="module")
def bootstrapped(settings, endpoints, tasks):
    bootstrap(settings, endpoints, tasks_host=tasks.host)
    return settings


def publish(settings: Settings, topic: str, payload: dict) -> str:
    publisher, _ = pubsub_clients(settings.pubsub_emulator_host)
    path = publisher.topic_path(PROJECT, topic)
    return publisher.publish(path, json.dumps(payload).encode(), origin="test").result(timeout=10)


def data(received) -> dict:
    return json.loads(base64.b64decode(received.body["message"]["data"]))


# --- the emulators --------------------------------------------------------------------


def test_pubsub_emulator_answers_on_loopback_only(pubsub):
    assert http_answers(f"http://{pubsub.host}/", lambda status: status == 200)
    assert set(listeners(pubsub.port).values()) == {"127.0.0.1"}


def test_cloud_tasks_emulator_answers_on_loopback_only_and_delivers_http_tasks(tasks, receiver):
    # Wrapped: the emulator itself would bind every interface.
    assert set(listeners(tasks.port).values()) == {"127.0.0.1"}
    client = tasks_client(tasks.host)
    parent = "projects/p/locations/l"
    queue = client.create_queue(parent=parent, queue={"name": f"{parent}/queues/probe"})
    soon = datetime.now(UTC) + timedelta(seconds=1)
    client.create_task(
        parent=queue.name,
        task={
            "http_request": {
                "url": receiver.url("/task"),
                "body": b'{"hello": "tasks"}',
                "headers": {"Content-Type": "application/json"},
            },
            "schedule_time": soon,
        },
    )
    [delivered] = receiver.wait_for(lambda r: r.path == "/task", timeout_s=15)
    assert delivered.body == {"hello": "tasks"}
    assert delivered.headers["x-cloudtasks-queuename"] == queue.name


# --- the bootstrap --------------------------------------------------------------------


def test_topology_names_and_policies(settings, endpoints):
    plan = topology(settings, endpoints)
    assert plan.topics == (*ARCHIVE_TOPICS, "htbase-summarize", "htbase-dead-letter")
    routes = {s.name: (s.topic, s.service) for s in plan.subscriptions}
    assert routes == {
        **{f"{t}-push": (t, "archiver-" + t.rsplit("-", 1)[1]) for t in ARCHIVE_TOPICS},
        "htbase-summarize-push": ("htbase-summarize", "summarizer"),
        "htbase-dead-letter-push": ("htbase-dead-letter", "dead-letter"),
    }
    for sub in plan.subscriptions:
        assert sub.push_endpoint == f"{endpoints[sub.service]}?token={TOKEN}"
        if sub.service == "dead-letter":
            assert (sub.dead_letter_topic, sub.max_delivery_attempts) == ("", 0)
        else:
            assert (sub.dead_letter_topic, sub.max_delivery_attempts) == ("htbase-dead-letter", 5)
    assert [q.name for q in plan.queues] == ["htbase-webhooks"]  # scheduled re-captures ride on housekeeping
    assert plan.bucket == "htbase-archives"


def test_topology_in_the_cloud_signs_pushes_instead_of_a_url_token(settings, endpoints):
    cloud = settings.with_(
        pubsub_emulator_host="",
        push_service_account="push@p.iam.gserviceaccount.com",
        push_audience="https://htbase.example",
        max_delivery_attempts=100,
    )
    for sub in topology(cloud, endpoints).subscriptions:
        assert sub.push_endpoint == endpoints[sub.service]
        assert sub.oidc_service_account == "push@p.iam.gserviceaccount.com"
        assert sub.max_delivery_attempts in (0, 100)


def test_bootstrap_creates_exactly_the_topology_and_a_second_run_changes_nothing(bootstrapped, endpoints, tasks, gcs):
    settings = bootstrapped
    publisher, subscriber = pubsub_clients(settings.pubsub_emulator_host)

    def snapshot():
        topics = sorted(t.name for t in publisher.list_topics(project=f"projects/{PROJECT}"))
        subs = sorted(type(s).to_json(s) for s in subscriber.list_subscriptions(project=f"projects/{PROJECT}"))
        queues = sorted(
            q.name for q in tasks_client(tasks.host).list_queues(parent=f"projects/{PROJECT}/locations/us-central1")
        )
        return topics, subs, queues

    before = snapshot()
    bootstrap(settings, endpoints, tasks_host=tasks.host)  # the second run: no error...
    assert snapshot() == before  # ...and no change

    topics, _, queues = before
    assert topics == sorted(
        f"projects/{PROJECT}/topics/{t}" for t in [*ARCHIVE_TOPICS, "htbase-summarize", "htbase-dead-letter"]
    )
    assert queues == [f"projects/{PROJECT}/locations/us-central1/queues/htbase-webhooks"]
    assert gcs_client(settings).bucket("htbase-archives").exists()

    subs = {s.name.rsplit("/", 1)[1]: s for s in subscriber.list_subscriptions(project=f"projects/{PROJECT}")}
    assert len(subs) == 7
    pdf = subs["htbase-archive-pdf-push"]
    assert pdf.topic == f"projects/{PROJECT}/topics/htbase-archive-pdf"
    assert pdf.push_config.push_endpoint == f"{endpoints['archiver-pdf']}?token={TOKEN}"
    assert pdf.ack_deadline_seconds == 600
    assert pdf.retry_policy.minimum_backoff == timedelta(seconds=0.1)
    assert pdf.retry_policy.maximum_backoff == timedelta(seconds=60)
    assert pdf.dead_letter_policy.dead_letter_topic == f"projects/{PROJECT}/topics/htbase-dead-letter"
    assert pdf.dead_letter_policy.max_delivery_attempts == 5
    summarize = subs["htbase-summarize-push"]
    assert summarize.push_config.push_endpoint == f"{endpoints['summarizer']}?token={TOKEN}"
    assert summarize.dead_letter_policy.max_delivery_attempts == 5
    dead = subs["htbase-dead-letter-push"]
    assert dead.push_config.push_endpoint == f"{endpoints['dead-letter']}?token={TOKEN}"
    assert not dead.dead_letter_policy.dead_letter_topic  # no dead letters of dead letters


def test_bootstrap_refuses_the_cloud(settings, endpoints):
    with pytest.raises(ValueError, match="Terraform"):
        bootstrap(settings.with_(pubsub_emulator_host=""), endpoints)


# --- push delivery through the bootstrapped subscriptions -------------------------------


def test_a_push_reaches_its_service_with_the_token(bootstrapped, receiver):
    message_id = publish(bootstrapped, "htbase-archive-pdf", {"task_id": "t-push", "archiver": "pdf"})
    [push] = receiver.wait_for(lambda r: r.path == "/archiver-pdf" and data(r)["task_id"] == "t-push")
    assert push.query == {"token": TOKEN}
    assert push.body["subscription"] == f"projects/{PROJECT}/subscriptions/htbase-archive-pdf-push"
    assert push.body["message"]["messageId"] == message_id
    assert push.body["message"]["attributes"] == {"origin": "test"}


def test_a_500_is_redelivered(bootstrapped, receiver, answers):
    answers["/archiver-screenshot"] = [500, 204]
    publish(bootstrapped, "htbase-archive-screenshot", {"task_id": "t-retry"})
    pushes = receiver.wait_for(lambda r: r.path == "/archiver-screenshot" and data(r)["task_id"] == "t-retry", count=2)
    assert len(pushes) == 2
    assert pushes[0].body["message"]["messageId"] == pushes[1].body["message"]["messageId"]
    # Acknowledged: no third delivery. A message published afterwards goes through the same
    # subscription's push loop, which would have redelivered the first (0.1 s backoff) by then.
    publish(bootstrapped, "htbase-archive-screenshot", {"task_id": "t-after"})
    receiver.wait_for(lambda r: r.path == "/archiver-screenshot" and data(r)["task_id"] == "t-after")
    retried = [r for r in receiver.requests if r.path == "/archiver-screenshot" and data(r)["task_id"] == "t-retry"]
    assert len(retried) == 2


def test_after_max_attempts_the_dead_letter_service_gets_the_message(bootstrapped, receiver, answers):
    answers["/summarizer"] = [500]
    publish(bootstrapped, "htbase-summarize", {"task_id": "t-poison"})
    [dead] = receiver.wait_for(lambda r: r.path == "/dead-letter" and data(r)["task_id"] == "t-poison", timeout_s=60)
    attempts = [r for r in receiver.requests if r.path == "/summarizer" and data(r)["task_id"] == "t-poison"]
    assert len(attempts) == 5
    attributes = dead.body["message"]["attributes"]
    assert attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert attributes["CloudPubSubDeadLetterSourceSubscription"] == "htbase-summarize-push"
    assert attributes["origin"] == "test"
    assert dead.query == {"token": TOKEN}
    assert dead.body["subscription"] == f"projects/{PROJECT}/subscriptions/htbase-dead-letter-push"


def test_missing_topics_are_not_silently_created(bootstrapped):
    publisher, _ = pubsub_clients(bootstrapped.pubsub_emulator_host)
    with pytest.raises(NotFound):
        publisher.get_topic(topic=publisher.topic_path(PROJECT, "htbase-archive-nothing"))


def test_pubsub_emulator_restarts_on_the_same_port_empty_and_bootstraps_again(pubsub, bootstrapped, endpoints):
    publisher, _ = pubsub_clients(pubsub.host)
    old_pid, port = pubsub.pid, pubsub.port
    pubsub.stop()
    assert not alive(old_pid) and not listeners(port)
    pubsub.start()
    assert pubsub.port == port and pubsub.pid != old_pid
    # The emulator keeps nothing across a restart...
    assert list(publisher.list_topics(project=f"projects/{PROJECT}")) == []
    # ...so the bootstrap runs again; a client on the old channel reconnects.
    bootstrap(bootstrapped, endpoints)
    assert len(list(publisher.list_topics(project=f"projects/{PROJECT}"))) == 7
