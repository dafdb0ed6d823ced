"""The whole emulator stack: emulators, bootstrap, and every service as its own process."""
from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emulators import free_port
from emulators.bootstrap import pubsub_clients
from htbase.topology import PUSH_SERVICES
from emulators.process import alive, family, http_answers, listeners
from emulators.stack import SERVICES, Stack, recorded_family
from htbase.config import PROJECT_ROOT
from htbase.messages import ARCHIVERS
from infra.storage import gcs_client

EMULATORS = ["postgres", "pubsub", "firestore", "gcs", "tasks"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    overrides = {"ALLOW_PRIVATE_URLS": "1", "LEASE_SECONDS": "20", "RETRY_BACKOFF_SECONDS": "0.5"}
    with Stack(tmp_path_factory.mktemp("stack"), overrides=overrides) as running:
        yield running


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
        assert http_answers(stack.url(name) + ("healthz" if name == "api" else "robots.txt")), name


def test_the_env_file_and_the_pid_file(stack):
    lines = (stack.root / "stack.env").read_text().splitlines()
    exported = dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
    assert exported == stack.env
    for key in ("DATABASE_URL", "FILE_STORAGE_PROVIDER", "GCS_BUCKET", "STORAGE_EMULATOR_HOST",
                "PUBSUB_EMULATOR_HOST", "PUBSUB_PROJECT_ID", "FIRESTORE_EMULATOR_HOST", "FIRESTORE_PROJECT_ID",
                "PUSH_AUTH_TOKEN", "TOPIC_PREFIX", "LOG_FORMAT", "ALLOW_PRIVATE_URLS"):
        assert exported[key], key
    records = json.loads((stack.root / "pids.json").read_text())["processes"]
    assert set(list(records)[:5]) == set(EMULATORS)  # stopped in reverse: services first
    assert all(alive(r["pid"], r["started"]) for r in records.values())
    assert all((stack.root / "logs" / f"{name}.log").exists() for name in [*SERVICES, "pubsub", "tasks"])


def test_each_subscription_pushes_to_its_service_with_the_token(stack):
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    subs = {s.name.rsplit("/", 1)[1]: s.push_config.push_endpoint
            for s in subscriber.list_subscriptions(project="projects/htbase-local")}
    token = stack.env["PUSH_AUTH_TOKEN"]
    assert sorted(subs.values()) == sorted(f"{stack.url(name)}?token={token}" for name in PUSH_SERVICES)


def test_a_push_without_the_token_is_refused(stack):
    envelope = {"message": {"data": "e30=", "messageId": "1"}, "subscription": "s"}
    refused = requests.post(stack.url("archiver-pdf"), json=envelope, timeout=10)
    assert refused.status_code in (401, 403)
    wrong = requests.post(stack.url("archiver-pdf") + "?token=wrong", json=envelope, timeout=10)
    assert wrong.status_code in (401, 403)


def test_a_submitted_url_is_captured_through_pubsub(stack, test_site):
    accepted = requests.post(f"{stack.api_url}/api/v2/archive",
                             json={"url": test_site.url("/article.html"), "archivers": ["monolith"]}, timeout=10)
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    deadline = time.monotonic() + 60
    while (task := requests.get(f"{stack.api_url}/api/v2/tasks/{task_id}", timeout=10).json())["status"] \
            not in ("success", "partial", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert task["status"] == "success", task
    blobs = [b.name for b in gcs_client(stack.settings).list_blobs(stack.env["GCS_BUCKET"], prefix=task_id)]
    assert blobs == [f"{task_id}/monolith.html"]


def test_a_killed_service_restarts_on_its_port(stack):
    name = "archiver-monolith"
    before = stack.pids()[name]
    members = family(before)
    stack.stop_service(name, signal.SIGKILL)
    assert not any(alive(pid) for pid in members) and not listeners(stack.ports[name])
    stack.start_service(name)
    after = stack.pids()[name]
    assert after != before and http_answers(stack.url(name) + "robots.txt")
    assert json.loads((stack.root / "pids.json").read_text())["processes"][name]["pid"] == after


def test_pubsub_restarts_on_its_port_and_is_bootstrapped_again(stack):
    port, before = stack.pubsub.port, stack.pids()["pubsub"]
    stack.stop_emulator("pubsub")
    assert not alive(before) and not listeners(port)
    stack.start_emulator("pubsub")
    assert stack.pubsub.port == port and stack.pids()["pubsub"] != before
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    assert len(list(subscriber.list_subscriptions(project="projects/htbase-local"))) == len(PUSH_SERVICES)


def test_firestore_restarts_on_its_port(stack):
    port, before = stack.firestore.port, stack.pids()["firestore"]
    stack.stop_emulator("firestore")
    assert not alive(before) and not listeners(port)
    stack.start_emulator("firestore")
    assert stack.firestore.port == port and stack.pids()["firestore"] != before
    assert http_answers(f"http://{stack.env['FIRESTORE_EMULATOR_HOST']}/", lambda status: status == 200)


def test_down_leaves_no_process_alive(stack):
    started = recorded_family(stack.root)
    assert len(started) >= len(SERVICES) + len(EMULATORS)
    postgres_dir = stack.postgres.root
    stack.down()
    assert [pid for pid in started if alive(pid)] == []
    assert not (stack.root / "pids.json").exists() and not postgres_dir.exists()


def test_the_command_line_starts_the_stack_and_stops_it_by_pid(tmp_path):
    """What `make stack-up` and `make stack-down` run: `up` returns and leaves the stack running.
    (The API alone of the services: the stack above started all of them.)"""
    command = [sys.executable, "-m", "emulators.stack"]
    root, port = tmp_path / "stack", free_port()
    up = subprocess.run([*command, "up", "--root", str(root), "--port", str(port), "--services", "api"],
                        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"api                    http://127.0.0.1:{port}" in up.stdout
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        status = subprocess.run([*command, "status", "--root", str(root)], capture_output=True, text=True)
        assert status.stdout.count(" up ") == 1 + len(EMULATORS), status.stdout
        again = subprocess.run([*command, "up", "--root", str(root)], capture_output=True, text=True)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        started = recorded_family(root)
        down = subprocess.run([*command, "down", "--root", str(root)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert [pid for pid in started if alive(pid)] == []
    assert not (root / "pids.json").exists()
