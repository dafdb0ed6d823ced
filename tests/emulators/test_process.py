"""ManagedProcess: start, readiness, stop by process group, and the failures it reports."""

from __future__ import annotations

import signal
import socket
import sys
import time

import pytest

from emulators import free_port
from emulators.process import ManagedProcess, ProcessError, alive, family, http_answers, listeners, terminate


def http_server(port: int, tmp_path, **kwargs) -> ManagedProcess:
    return ManagedProcess(
        "web",
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        port=port,
        cwd=tmp_path,
        probe=lambda: http_answers(f"http://127.0.0.1:{port}/"),
        log_path=tmp_path / "web.log",
        **kwargs,
    )


def test_starts_answers_stops_and_restarts_on_the_same_port(tmp_path):
    port = free_port()
    process = http_server(port, tmp_path).start()
    first = process.pid
    assert process.alive and http_answers(f"http://127.0.0.1:{port}/", lambda status: status == 200)
    assert set(listeners(port).values()) == {"127.0.0.1"}
    process.stop()
    assert not alive(first) and not listeners(port)
    process.start()
    assert process.pid != first and process.port == port and http_answers(f"http://127.0.0.1:{port}/")
    process.stop()


def test_a_paused_process_keeps_its_port_answers_nothing_and_resumes(tmp_path):
    port = free_port()
    process = http_server(port, tmp_path).start()
    process.pause()
    assert process.paused and process.alive and listeners(port)
    assert not http_answers(f"http://127.0.0.1:{port}/")  # the connection hangs until the client gives up
    process.resume()
    assert not process.paused and http_answers(f"http://127.0.0.1:{port}/", lambda status: status == 200)
    process.pause()
    process.stop()  # a paused process stops too
    assert not listeners(port)


def test_stop_ends_the_whole_family_even_a_child_that_left_the_group(tmp_path):
    port = free_port()
    # A child in a session of its own (as browsers start theirs) is not in the process group.
    script = (
        f"import subprocess, sys; subprocess.Popen(['sleep', '300'], start_new_session=True); "
        f"import runpy; sys.argv = ['http.server', '--bind', '127.0.0.1', '{port}']; "
        f"runpy.run_module('http.server', run_name='__main__')"
    )
    process = ManagedProcess("web", [sys.executable, "-c", script], port=port, cwd=tmp_path).start()
    members = family(process.pid)
    assert len(members) == 2
    process.stop()
    assert not any(alive(pid) for pid in members)


def test_sigkill_stops_at_once(tmp_path):
    port = free_port()
    # This server ignores SIGTERM: only the SIGKILL (a crash) ends it quickly.
    script = (
        f"import signal, runpy, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"sys.argv = ['http.server', '--bind', '127.0.0.1', '{port}']; "
        f"runpy.run_module('http.server', run_name='__main__')"
    )
    process = ManagedProcess("web", [sys.executable, "-c", script], port=port, cwd=tmp_path).start()
    pid, started = process.pid, time.monotonic()
    process.stop(signal.SIGKILL, timeout_s=60)  # waiting for a SIGTERM to work would take the minute
    assert not alive(pid) and time.monotonic() - started < 30


def test_a_process_that_exits_is_reported_with_its_log(tmp_path):
    process = ManagedProcess(
        "broken",
        [sys.executable, "-c", "print('no config, giving up'); raise SystemExit(3)"],
        port=free_port(),
        log_path=tmp_path / "broken.log",
    )
    with pytest.raises(ProcessError, match=r"(?s)exited with status 3.*no config, giving up"):
        process.start()
    assert not process.alive


def test_a_port_someone_else_holds_fails_fast(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        # A server that would keep running without its port (as the Pub/Sub emulator does).
        process = ManagedProcess("squatter", [sys.executable, "-c", "import time; time.sleep(60)"], port=port)
        started = time.monotonic()
        with pytest.raises(ProcessError, match="taken by another process"):
            process.start()
        assert time.monotonic() - started < 30 and not process.alive  # not the minute it may take to start


def test_terminate_leaves_a_reused_pid_alone(tmp_path):
    process = http_server(free_port(), tmp_path).start()
    terminate(process.pid, process.started + 1)  # a record of an earlier process that had this PID
    assert process.alive
    process.stop()
