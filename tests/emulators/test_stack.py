"""The whole emulator stack: emulators, bootstrap, and every service as its own process."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from emulators import free_port
from emulators.bootstrap import pubsub_clients
from emulators.process import alive, family, http_answers, listeners
from emulators.stack import SERVICES, Stack, recorded_family
from htbase.config import PROJECT_ROOT
from htbase.messages import ARCHIVERS
from htbase.topology import PUSH_SERVICES
from infra.replica import firestore_client
from infra.storage import gcs_client, make_file_store
from tests.helpers import HttpApi, finished, submit, wait_for

EMULATORS = ["postgres", "pubsub", "firestore", "gcs", "tasks"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One stack for the module; every test leaves every component running, as it found it."""
    overrides = {"ALLOW_PRIVATE_URLS": "1", "LEASE_SECONDS": "20", "RETRY_BACKOFF_SECONDS": "0.5"}
    running = Stack(tmp_path_factory.mktemp("stack"), overrides=overrides).up()
    try:
        yield running
    finally:
        started, data = recorded_family(running.root), running.postgres.root
        running.down()
    # `down` itself: nothing it started is left, nor its data.
    assert [pid for pid in started if alive(pid)] == []
    assert not (running.root / "pids.json").exists() and not data.exists()
    assert not (running.root / "gcs").exists() and not (running.root / "firestore").exists()


def recorded_pid(stack, name: str) -> int | None:
    return json.loads((stack.root / "pids.json").read_text())["processes"].get(name, {}).get("pid")


def answers(stack, name: str) -> bool:
    """The service answers on its port (functions-framework serves robots.txt itself)."""
    return http_answers(stack.url(name) + ("healthz" if name == "api" else "robots.txt"))


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_every_service_is_its_own_process_with_its_role(stack):
    pids = stack.pids()
    assert set(pids) == {*SERVICES, *EMULATORS}
    assert len(set(pids.values())) == len(pids)
    health = requests.get(f"{stack.api_url}/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["role"] == "api"
    roles = {"api": "api", "summarizer": "summarizer", "dead-letter": "archiver"}
    roles.update({f"archiver-{a}": "archiver" for a in ARCHIVERS})
    for name, role in roles.items():
        env = environ(pids[name])
        assert env["SERVICE_ROLE"] == role, name
        if name.startswith("archiver-"):
            assert env["ARCHIVERS"] == name.removeprefix("archiver-")
        assert env["PUSH_AUTH_TOKEN"] == stack.env["PUSH_AUTH_TOKEN"]
        assert set(listeners(stack.ports[name]).values()) == {"127.0.0.1"}, name
        assert answers(stack, name), name


def test_the_env_file_and_the_pid_file(stack):
    lines = (stack.root / "stack.env").read_text().splitlines()
    exported = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
    assert exported == stack.env
    for key in (
        "DATABASE_URL",
        "FILE_STORAGE_PROVIDER",
        "GCS_BUCKET",
        "STORAGE_EMULATOR_HOST",
        "PUBSUB_EMULATOR_HOST",
        "PUBSUB_PROJECT_ID",
        "FIRESTORE_EMULATOR_HOST",
        "FIRESTORE_PROJECT_ID",
        "PUSH_AUTH_TOKEN",
        "TOPIC_PREFIX",
        "LOG_FORMAT",
        "ALLOW_PRIVATE_URLS",
    ):
        assert exported[key], key
    state = json.loads((stack.root / "pids.json").read_text())
    records = state["processes"]
    assert set(list(records)[:5]) == set(EMULATORS)  # stopped in reverse: services first
    assert all(alive(r["pid"], r["started"]) for r in records.values())
    assert state["held"] == []
    assert all((stack.root / "logs" / f"{name}.log").exists() for name in [*SERVICES, "pubsub", "tasks"])


def test_each_subscription_pushes_to_its_service_with_the_token(stack):
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    subs = {
        s.name.rsplit("/", 1)[1]: s.push_config.push_endpoint
        for s in subscriber.list_subscriptions(project="projects/htbase-local")
    }
    token = stack.env["PUSH_AUTH_TOKEN"]
    assert sorted(subs.values()) == sorted(f"{stack.url(name)}?token={token}" for name in PUSH_SERVICES)


def test_a_push_without_the_token_is_refused(stack):
    envelope = {"message": {"data": "e30=", "messageId": "1"}, "subscription": "s"}
    refused = requests.post(stack.url("archiver-pdf"), json=envelope, timeout=10)
    assert refused.status_code in (401, 403)
    wrong = requests.post(stack.url("archiver-pdf") + "?token=wrong", json=envelope, timeout=10)
    assert wrong.status_code in (401, 403)


def test_a_submitted_url_is_captured_through_pubsub(stack, test_site):
    task_id = submit(HttpApi(stack.api_url), test_site.url("/article.html"), archivers=["monolith"])
    assert finished(HttpApi(stack.api_url), task_id, 60)["status"] == "success"
    blobs = [b.name for b in gcs_client(stack.settings).list_blobs(stack.env["GCS_BUCKET"], prefix=task_id)]
    assert blobs == [f"{task_id}/monolith.html"]


def test_a_killed_service_is_started_again_by_the_supervisor_on_its_port(stack):
    name = "archiver-monolith"
    before = stack.pids()[name]
    members = family(before)
    stack.kill(name)
    assert not any(alive(pid) for pid in members)
    after = wait_for(
        lambda: answers(stack, name) and recorded_pid(stack, name) not in (None, before) and recorded_pid(stack, name),
        60,
        "the supervisor's restart",
    )
    assert after == stack.pids()[name]
    assert f"{name} exited; starting it again" in (stack.root / "logs" / "supervisor.log").read_text()


def test_a_stopped_service_stays_down_until_started(stack):
    stack.stop("archiver-pdf")
    try:
        # While the supervisor restarts a killed service, the stopped one stays down.
        before = stack.pids()["archiver-screenshot"]
        stack.kill("archiver-screenshot")
        wait_for(
            lambda: answers(stack, "archiver-screenshot") and stack.pids()["archiver-screenshot"] != before,
            60,
            "the supervisor's restart",
        )
        assert not stack.alive("archiver-pdf") and not listeners(stack.ports["archiver-pdf"])
        assert json.loads((stack.root / "pids.json").read_text())["held"] == ["archiver-pdf"]
    finally:
        stack.start("archiver-pdf")
    assert answers(stack, "archiver-pdf")


def subscriptions(stack) -> int | None:
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    try:
        return len(list(subscriber.list_subscriptions(project="projects/htbase-local", timeout=5)))
    except Exception:  # not back yet
        return None


def test_pubsub_stopped_is_frozen_and_loses_nothing(stack):
    before = stack.pids()["pubsub"]
    stack.stop("pubsub")
    assert stack.pubsub.paused and alive(before)  # an outage: it answers nothing
    stack.start("pubsub")
    assert stack.pids()["pubsub"] == before and not stack.pubsub.paused
    assert subscriptions(stack) == len(PUSH_SERVICES)


def test_pubsub_killed_comes_back_on_its_port_empty_and_bootstrapped_again(stack):
    port, before = stack.pubsub.port, stack.pids()["pubsub"]
    stack.kill("pubsub")
    assert not alive(before)
    wait_for(lambda: recorded_pid(stack, "pubsub") not in (None, before), 60, "the supervisor's restart")
    assert stack.pubsub.port == port and subscriptions(stack) == len(PUSH_SERVICES)


def test_firestore_stopped_is_frozen_and_keeps_its_documents(stack):
    documents = firestore_client(stack.settings).collection("stack-test")
    documents.document("kept").set({"n": 1}, timeout=10)
    before = stack.pids()["firestore"]
    stack.stop("firestore")
    assert stack.firestore.paused
    stack.start("firestore")
    assert stack.pids()["firestore"] == before
    assert documents.document("kept").get(timeout=10).to_dict() == {"n": 1}


def test_gcs_stopped_or_killed_comes_back_with_its_objects(stack):
    store = make_file_store(stack.settings)
    stored = store.put("stack-test/kept.html", b"<p>kept</p>", "text/html")
    stack.stop("gcs")
    stack.start("gcs")
    stack.kill("gcs")  # the objects are on disk: even a crash keeps them
    wait_for(lambda: http_answers(f"{stack.gcs.endpoint}/storage/v1/b"), 60, "the supervisor's restart")
    assert store.get("stack-test/kept.html") == b"<p>kept</p>"
    assert store.put("stack-test/kept.html", b"other", "text/html") == stored  # still created once


def test_postgres_killed_is_started_again_with_its_rows(stack):
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE IF NOT EXISTS stack_test (n int)"))
        connection.execute(sa.text("INSERT INTO stack_test VALUES (7)"))
    engine.dispose()
    stack.kill("postgres")

    def rows():
        try:
            with engine.connect() as connection:
                return connection.execute(sa.text("SELECT n FROM stack_test")).scalars().all()
        except sa.exc.DBAPIError:  # not back yet
            return None
        finally:
            engine.dispose()

    assert wait_for(rows, 60, "Postgres to be started again") == [7]
    wait_for(lambda: requests.get(f"{stack.api_url}/healthz", timeout=10).status_code == 200, 60, "the API's health")


def test_unknown_names_are_refused(stack):
    with pytest.raises(ValueError, match="unknown component 'archiver-nope'"):
        stack.stop("archiver-nope")


def test_the_command_line_starts_a_supervised_stack_injects_faults_and_stops_it(tmp_path):
    """What `make stack-up` and `make stack-down` run: `up` returns and leaves the stack running under a
    supervisor process. (The API alone of the services: the stack above started all of them.)"""
    command = [sys.executable, "-m", "emulators.stack"]
    root, port = tmp_path / "stack", free_port()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *args, "--root", str(root)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180
        )

    def records() -> dict:
        return json.loads((root / "pids.json").read_text())["processes"]

    up = run("up", "--port", str(port), "--services", "api")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"api                    http://127.0.0.1:{port}" in up.stdout
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        status = run("status")
        assert status.stdout.count(" up ") == 2 + len(EMULATORS), status.stdout  # with the supervisor
        again = run("up")
        assert again.returncode == 1 and "already running" in again.stderr

        api = records()["api"]["pid"]
        assert run("kill", "api").returncode == 0
        wait_for(
            lambda: (
                records().get("api", {}).get("pid") not in (None, api)
                and http_answers(f"http://127.0.0.1:{port}/healthz")
            ),
            60,
            "the supervisor's restart",
        )
        assert run("stop", "tasks").returncode == 0
        assert ["tasks", "stopped"] in [line.split()[:2] for line in run("status").stdout.splitlines()]
        assert run("start", "tasks").returncode == 0 and alive(records()["tasks"]["pid"])
        unknown = run("stop", "nope")
        assert unknown.returncode == 1 and "unknown component 'nope'" in unknown.stderr
    finally:
        started = recorded_family(root)
        down = run("down")
    assert down.returncode == 0, down.stderr
    assert [Path(f"/proc/{pid}/cmdline").read_text() for pid in started if alive(pid)] == []
    assert not (root / "pids.json").exists() and not (root / "control.sock").exists()


def test_down_stops_by_pid_what_a_dead_supervisor_left(tmp_path):
    """The supervisor process is gone (killed): `down` stops what it started by PID, and nothing
    restarts it meanwhile."""
    command = [sys.executable, "-m", "emulators.stack"]
    root = tmp_path / "stack"
    up = subprocess.run(
        [*command, "up", "--root", str(root), "--port", str(free_port()), "--services", ""],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    started = recorded_family(root)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        os.kill(json.loads((root / "pids.json").read_text())["processes"]["supervisor"]["pid"], signal.SIGKILL)
    finally:
        down = subprocess.run([*command, "down", "--root", str(root)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "stopped supervisor" not in down.stdout and "pubsub" in down.stdout
    assert [pid for pid in started if alive(pid)] == []
