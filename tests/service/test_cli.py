"""The `htbase` command as `make run` uses it: a served all-in-one process, and the archive client."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from emulators import free_port

HTBASE = str(Path(sys.executable).parent / "htbase")


@pytest.fixture
def serve(tmp_path):
    """Start `htbase serve` on a free port with the embedded defaults in tmp_path; yields (url, start)."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'htbase.db'}",
           "LOCAL_STORAGE_PATH": str(tmp_path / "archives"), "ALLOW_PRIVATE_URLS": "1",
           "ARCHIVERS": "monolith,pdf", "LOG_FORMAT": "json"}
    processes = []

    def start():
        log = open(tmp_path / f"serve-{len(processes)}.log", "w")
        process = subprocess.Popen([HTBASE, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        processes.append(process)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return process
            except requests.ConnectionError:
                time.sleep(0.1)
        raise AssertionError((tmp_path / f"serve-{len(processes) - 1}.log").read_text())

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
    api, start = serve
    server = start()
    accepted = requests.post(f"{api}/api/v2/archive", json={"url": test_site.url("/delay?s=3&crash"),
                                                            "archivers": ["monolith"]}, timeout=10).json()
    time.sleep(1)  # the capture is under way
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    start()
    deadline = time.monotonic() + 60
    while (task := requests.get(api + accepted["status_url"], timeout=5).json())["status"] != "success":
        assert time.monotonic() < deadline, task
        time.sleep(0.3)
    assert task["subtasks"]["monolith"]["attempts"] == 2
