"""The `htbase` command as `make run` uses it: a served all-in-one process, and the archive client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from emulators import free_port
from emulators.process import http_answers
from tests.helpers import HttpApi, finished, submit, task, wait_for

HTBASE = str(Path(sys.executable).parent / "htbase")


@pytest.fixture
def serve(tmp_path):
    """Start `htbase serve` on a free port with the embedded defaults in tmp_path; yields (url, start)."""
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'htbase.db'}",
        "LOCAL_STORAGE_PATH": str(tmp_path / "archives"),
        "ALLOW_PRIVATE_URLS": "1",
        "ARCHIVERS": "monolith,pdf",
        "LOG_FORMAT": "json",
    }
    processes = []

    def start():
        log = open(tmp_path / f"serve-{len(processes)}.log", "w")
        process = subprocess.Popen(
            [HTBASE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        processes.append(process)
        try:
            wait_for(
                lambda: http_answers(f"http://127.0.0.1:{port}/healthz", lambda status: status == 200),
                60,
                "htbase serve to answer",
            )
        except AssertionError:
            raise AssertionError((tmp_path / f"serve-{len(processes) - 1}.log").read_text()) from None
        return process

    yield f"http://127.0.0.1:{port}", start
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_cli(*args: str, api: str) -> subprocess.CompletedProcess:
    return subprocess.run([HTBASE, "archive", *args, "--api", api], capture_output=True, text=True, timeout=120)


def test_archive_and_wait_against_a_served_htbase(serve, test_site):
    api, start = serve
    start()
    done = run_cli(test_site.url("/article.html"), "--wait", api=api)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted: task" in done.stdout and "success" in done.stdout
    assert "monolith" in done.stdout and "pdf" in done.stdout

    failed = run_cli(test_site.url("/missing"), "--wait", "--archivers", "monolith", api=api)
    assert failed.returncode == 1 and "HTTP 404" in failed.stdout

    refused = run_cli("file:///etc/passwd", api=api)
    assert refused.returncode == 2 and "refused (400)" in refused.stderr


def test_no_server_is_a_clear_error():
    result = run_cli("https://example.org/", api=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 2 and "no htbase answers" in result.stderr


def test_work_accepted_before_a_crash_finishes_after_a_restart(serve, test_site):
    url, start = serve
    server, api = start(), HttpApi(url)
    task_id = submit(api, test_site.url("/delay?s=3&crash"), archivers=["monolith"])
    wait_for(
        lambda: task(api, task_id)["subtasks"]["monolith"]["status"] == "processing", 60, "the capture to be under way"
    )
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    start()
    done = finished(api, task_id)
    assert done["status"] == "success", done
    assert done["subtasks"]["monolith"]["attempts"] == 2
