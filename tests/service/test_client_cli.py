"""The `htbase` command as a client and as the keeper of keys: keys made, listed and revoked in the ledger;
list, show, get, cancel and delete (a task, an item) against a served htbase with auth on; --wait follows
the task's events, across the streams the server ends, and says where everything is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from api import progress
from emulators import free_port
from emulators.process import http_answers
from infra.keys import ApiKeys
from service.embedded import EmbeddedService
from tests.api.conftest import served
from tests.helpers import wait_for

HTBASE = str(Path(sys.executable).parent / "htbase")
KEY = re.compile(r"htb_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def htbase(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HTBASE_")}
    return subprocess.run([HTBASE, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=180)


def test_keys_are_made_listed_and_revoked_in_the_ledger(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'htbase.db'}", "LOCAL_STORAGE_PATH": str(tmp_path / "archives")}
    made = htbase("keys", "create", "--name", "my phone", "--scope", "write", env=env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]  # the last line, for scripts
    assert KEY.fullmatch(key)
    prefix = key.split("_")[1]

    listed = htbase("keys", "list", env=env)
    assert re.search(rf"^{prefix}  write\s+live\s.*my phone$", listed.stdout, re.M), listed.stdout
    assert key not in listed.stdout

    assert htbase("keys", "revoke", prefix, env=env).returncode == 0
    assert re.search(rf"^{prefix}  write\s+revoked ", htbase("keys", "list", env=env).stdout, re.M)
    again = htbase("keys", "revoke", prefix, env=env)
    assert again.returncode == 2 and f"no live key {prefix}" in again.stderr
    assert htbase("keys", "create", "--name", "x", "--scope", "root", env=env).returncode == 2


def test_a_start_that_needs_a_key_is_refused_and_says_how_to_make_one(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'htbase.db'}", "LOCAL_STORAGE_PATH": str(tmp_path / "archives")}
    refused = htbase("serve", "--host", "0.0.0.0", "--port", "0", env=env)
    assert refused.returncode == 2
    assert "HOST=0.0.0.0 is not loopback" in refused.stderr and "htbase keys create" in refused.stderr


def test_on_loopback_with_no_key_htbase_serves_openly_and_says_so(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'htbase.db'}",
        "LOCAL_STORAGE_PATH": str(tmp_path / "archives"),
        "PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HTBASE_")}
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(
            [HTBASE, "serve"], env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(
            lambda: http_answers(f"http://127.0.0.1:{env['PORT']}/api/v2/tasks", lambda status: status == 200),
            60,
            "htbase serve to answer without a key",
        )
        assert "no API key exists: the API is open to anyone" in (tmp_path / "serve.log").read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@dataclass
class Served:
    env: dict[str, str]  # what the `htbase` command is run with
    service: EmbeddedService
    followed: list[str | None]  # each request for a task's events: the Last-Event-ID it sent

    def task(self, task_id: str) -> dict:
        headers = {"Authorization": f"Bearer {self.env['HTBASE_API_KEY']}"}
        return requests.get(f"{self.env['HTBASE_URL']}/api/v2/tasks/{task_id}", headers=headers, timeout=10).json()


@pytest.fixture
def served_htbase(embedded_settings):
    """A whole htbase (monolith and readability captures, one at a time; the offline summarizer) on a real
    server, with a key, noting the requests for events."""
    settings = embedded_settings.with_(archivers=("monolith", "readability"), worker_concurrency=1)
    with EmbeddedService(settings) as service:
        key = ApiKeys(service.runtime.engine).create("cli", "admin")[1]
        followed: list[str | None] = []

        def noting(environ, start_response):
            if environ["PATH_INFO"].endswith("/events"):
                followed.append(environ.get("HTTP_LAST_EVENT_ID"))
            return service.api(environ, start_response)

        with served(noting) as url:
            env = {"HTBASE_URL": url, "HTBASE_API_KEY": key, "DATABASE_URL": "sqlite:////nonexistent/never.db"}
            yield Served(env, service, followed)


def accepted(output: str) -> tuple[str, str]:
    """The task and the item that `htbase archive` says it made."""
    found = re.search(r"accepted: task (\S+) \(item (\S+)\)", output)
    assert found, output
    return found[1], found[2]


def test_the_client_commands_with_a_key(served_htbase, test_site, tmp_path):
    env, url = served_htbase.env, served_htbase.env["HTBASE_URL"]
    done = htbase("archive", test_site.url("/article.html"), "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id, item_id = accepted(done.stdout)
    assert served_htbase.followed == [None]  # --wait follows the events, which ended with the task
    fetch = done.stdout.split("fetch:", 1)[1]
    for where in (
        f"{url}/api/v2/archives/{task_id}/monolith",
        f"{url}/api/v2/archives/{task_id}/readability",
        f"{url}/api/v2/archives/{task_id}/readability?format=txt",
        f"{url}/api/v2/summaries/{task_id}",
    ):
        assert where in fetch, done.stdout

    listed = htbase("list", env=env)
    assert listed.returncode == 0 and task_id in listed.stdout and test_site.url("/article.html") in listed.stdout
    shown = htbase("show", task_id, env=env)
    assert shown.returncode == 0 and "monolith" in shown.stdout and "success" in shown.stdout

    page = tmp_path / "page.html"
    assert htbase("get", task_id, "monolith", "-o", str(page), env=env).returncode == 0
    assert b"<html" in page.read_bytes().lower()
    text = htbase("get", task_id, "readability.txt", "-o", "-", env=env)
    assert text.returncode == 0 and len(text.stdout) > 200 and "<" not in text.stdout
    zipped = htbase("get", task_id, "all", env=env, cwd=tmp_path)  # named as the API names it
    assert zipped.returncode == 0 and (tmp_path / f"{task_id}.zip").stat().st_size > 0

    unknown = htbase("show", "no-such-task", env=env)
    assert unknown.returncode == 2 and "refused (404)" in unknown.stderr
    keyless = htbase("list", env={"HTBASE_URL": url})
    assert keyless.returncode == 2 and "refused (401)" in keyless.stderr

    deleted = htbase("delete", "--item", item_id, env=env)
    assert deleted.returncode == 0 and f"deleted item {item_id}" in deleted.stdout, deleted.stderr
    assert "refused (404)" in htbase("show", task_id, env=env).stderr  # its snapshot went with it
    again = htbase("delete", "--item", item_id, env=env)
    assert again.returncode == 2 and "refused (404)" in again.stderr


def test_wait_follows_the_events_across_streams_the_server_ends(served_htbase, test_site, monkeypatch):
    monkeypatch.setattr(progress, "STREAM_S", 1.0)  # the server ends each stream after 1 s, not 120 s
    done = htbase("archive", test_site.url("/delay?s=4"), "--archivers", "monolith", "--wait", env=served_htbase.env)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id, _ = accepted(done.stdout)
    assert re.search(r"^  monolith\s+success ", done.stdout, re.M) and "fetch:" in done.stdout
    assert served_htbase.task(task_id)["status"] == "success"
    first, *reconnects = served_htbase.followed
    assert first is None and reconnects, served_htbase.followed
    assert all(re.fullmatch(r"[0-9a-f]{32}", last_id or "") for last_id in reconnects)  # the last id it had


def test_cancel_during_a_capture_then_delete(served_htbase, test_site):
    env = served_htbase.env
    made = htbase("archive", test_site.url("/delay?s=8"), env=env)  # monolith and readability, one at a time
    task_id, item_id = accepted(made.stdout)

    def processing() -> list[str]:
        return [name for name, sub in served_htbase.task(task_id)["subtasks"].items() if sub["status"] == "processing"]

    running = wait_for(processing, 60, "a capture to start")
    cancelled = htbase("cancel", task_id, env=env)
    assert cancelled.returncode == 0 and f"task {task_id}: processing" in cancelled.stdout, cancelled.stderr

    # The running capture finishes and is kept; the other one never starts.
    ended = wait_for(lambda: (task := served_htbase.task(task_id))["status"] != "processing" and task, 60)
    waiting = {"monolith", "readability"} - set(running)
    assert ended["status"] == "partial"
    assert {name: sub["status"] for name, sub in ended["subtasks"].items()} == {
        **{name: "success" for name in running},
        **{name: "cancelled" for name in waiting},
    }
    assert [ended["subtasks"][name]["attempts"] for name in waiting] == [0]

    deleted = htbase("delete", task_id, env=env)
    assert deleted.returncode == 0 and f"deleted task {task_id}" in deleted.stdout, deleted.stderr
    gone = htbase("show", task_id, env=env)
    assert gone.returncode == 2 and "refused (404)" in gone.stderr
    assert "refused (404)" in htbase("delete", "--item", item_id, env=env).stderr  # left with no snapshot, it went
