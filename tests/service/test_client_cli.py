"""The `htbase` command as a client and as the keeper of keys: keys made, listed and revoked in the ledger;
list, show, get, cancel and delete against a served htbase with auth on; --wait says where everything is."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.fixture
def served_htbase(embedded_settings):
    """A whole htbase (monolith and readability captures, the offline summarizer) on a real server, with a key."""
    with EmbeddedService(embedded_settings.with_(archivers=("monolith", "readability"))) as service:
        key = ApiKeys(service.runtime.engine).create("cli", "admin")[1]
        with served(service.api) as url:
            yield {"HTBASE_URL": url, "HTBASE_API_KEY": key, "DATABASE_URL": "sqlite:////nonexistent/never.db"}


def test_the_client_commands_with_a_key(served_htbase, test_site, tmp_path):
    env, url = served_htbase, served_htbase["HTBASE_URL"]
    done = htbase("archive", test_site.url("/article.html"), "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    task_id = re.search(r"accepted: task (\S+)", done.stdout)[1]
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


def test_cancel_and_delete(served_htbase, test_site):
    env = served_htbase
    accepted = htbase("archive", test_site.url("/delay?s=10"), "--archivers", "monolith", env=env)
    task_id = re.search(r"accepted: task (\S+)", accepted.stdout)[1]
    cancelled = htbase("cancel", task_id, env=env)
    assert cancelled.returncode == 0 and f"task {task_id}:" in cancelled.stdout, cancelled.stderr
    deleted = htbase("delete", task_id, env=env)
    assert deleted.returncode == 0 and f"deleted task {task_id}" in deleted.stdout, deleted.stderr
    gone = htbase("show", task_id, env=env)
    assert gone.returncode == 2 and "refused (404)" in gone.stderr
