"""One handle for every process the emulator stack runs: each emulator and each service.

A ``ManagedProcess`` starts its command in a new session (so it leads its own
process group), waits until the process itself listens on its port and a probe
answers, and stops the whole group. ``terminate`` does the stopping by PID
alone, so ``python -m emulators.stack down`` can stop what an earlier process
started. ``FreePortProcess`` is one whose command names its port: it picks a
free port itself. Linux only: it reads /proc.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

from emulators import free_port


class ProcessError(RuntimeError):
    pass


# --- /proc helpers -----------------------------------------------------------


def _stat(pid: int, task: str = "") -> list[str] | None:
    """The fields of /proc/PID/stat (or of one thread's) after the command name, state first; None if gone."""
    try:
        raw = Path(f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the PID, it names one process for good."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def alive(pid: int, started: int | None = None) -> bool:
    """Running and, if ``started`` is given, still the same process (PIDs get reused).

    A process whose main thread is a zombie is alive while another of its threads is still
    exiting: until the last one has, its files and sockets (a listening port) stay open.
    """
    fields = _stat(pid)
    if fields is None or (started is not None and int(fields[19]) != started):
        return False
    if fields[0] not in ("Z", "X"):
        return True
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    return any((state := _stat(pid, tid)) and state[0] not in ("Z", "X") for tid in threads)


def family(pid: int) -> set[int]:
    """The process, its process group and all its descendants (some may have left the group)."""
    parents: dict[int, int] = {}
    members = {pid}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents[int(entry.name)] = int(fields[1])
            if int(fields[2]) == pid:
                members.add(int(entry.name))
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in members} - members
        members |= children
        grew = bool(children)
    return members


def terminate(pid: int, started: int | None = None, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    """Stop a process and everything it spawned: ``sig`` first, SIGKILL for whatever outlives ``timeout_s``."""
    terminate_all([(pid, started, sig)], timeout_s)


def terminate_all(targets: Sequence[tuple[int, int | None, int]], timeout_s: float = 10.0) -> None:
    """``terminate`` for many (pid, started, signal) at once: all are signalled, then all awaited."""
    members: set[int] = set()
    for pid, started, sig in targets:
        if not alive(pid, started):
            continue
        tree = family(pid)
        members |= tree
        # The group it leads (that also reaches a child forked meanwhile), then every member by
        # PID: a descendant may have left the group.
        if (fields := _stat(pid)) and int(fields[2]) == pid:
            _signal(os.killpg, pid, sig)
        for member in tree:
            _signal(os.kill, member, sig)
            _signal(os.kill, member, signal.SIGCONT)  # a paused process acts on the signal only once resumed
    deadline = time.monotonic() + timeout_s
    while any(alive(member) for member in members) and time.monotonic() < deadline:
        time.sleep(0.05)
    for member in members:
        if alive(member):
            _signal(os.kill, member, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(alive(member) for member in members) and time.monotonic() < deadline:
        time.sleep(0.02)


def _signal(send: Callable[[int, int], None], pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # gone meanwhile
        send(pid, sig)


def listeners(port: int) -> dict[int, str]:
    """Listening TCP sockets on ``port``: socket inode -> local address ("127.0.0.1", "0.0.0.0", "::" ...)."""
    found = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found[int(fields[9])] = _address(address, width)
    return found


def _address(hex_address: str, width: int) -> str:
    # /proc prints each 32-bit word of the address in host (little-endian) byte order.
    raw = b"".join(bytes.fromhex(hex_address[i : i + 8])[::-1] for i in range(0, width, 8))
    address = ipaddress.ip_address(raw)
    return str(getattr(address, "ipv4_mapped", None) or address)  # a dual-stack socket bound to 127.0.0.1


def sockets(pids: set[int]) -> set[int]:
    """Inodes of the sockets these processes hold open."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.scandir(f"/proc/{pid}/fd"):
                target = os.readlink(fd.path)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
        except OSError:  # gone, or not ours to read
            continue
    return inodes


def http_answers(url: str, ok: Callable[[int], bool] = lambda status: True) -> bool:
    """Whether ``url`` gives an HTTP answer whose status passes ``ok`` (by default: any answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return ok(response.status)
    except urllib.error.HTTPError as error:
        return ok(error.code)
    except OSError:
        return False


# --- the handle ---------------------------------------------------------------


class ManagedProcess:
    """A command listening on 127.0.0.1:``port``; ``start`` again after ``stop`` reuses the port."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        probe: Callable[[], bool] = lambda: True,
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.name, self.argv, self.port, self.probe = name, list(argv), port, probe
        self.env, self.cwd, self.log_path = dict(env) if env is not None else None, cwd, log_path
        self.start_timeout_s = start_timeout_s
        self._popen: subprocess.Popen | None = None
        self._started: int | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def started(self) -> int | None:
        """Start time in clock ticks: with ``pid``, names this process even after the PID is reused."""
        return self._started if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and alive(self._popen.pid, self._started)

    def record(self) -> dict:
        """What ``terminate`` needs to stop this process from another process."""
        return {"pid": self.pid, "started": self.started, "port": self.port}

    def start(self) -> Self:
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> Self:
        if self.alive:
            return self
        self.stop()  # reap a process that ended on its own, and close its log
        # Logs go to a file (appended across restarts), never to a pipe: an unread pipe fills and blocks.
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab+") if self.log_path else tempfile.TemporaryFile()
        self._popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._started = start_ticks(self._popen.pid)
        return self

    def pause(self) -> None:
        """Freeze the process group (SIGSTOP): it keeps its port and its state, and answers nothing."""
        self._signal_group(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while self.alive and not self.paused and time.monotonic() < deadline:
            time.sleep(0.01)  # the signal lands asynchronously

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    @property
    def paused(self) -> bool:
        return self._popen is not None and self.alive and (_stat(self._popen.pid) or ["?"])[0] == "T"

    def _signal_group(self, sig: int) -> None:
        if self._popen is not None and self.alive:
            _signal(os.killpg, self._popen.pid, sig)

    def wait_ready(self) -> Self:
        """Until this process group listens on the port and the probe passes; stops it on failure."""
        popen = self._popen
        if popen is None:
            raise ProcessError(f"{self.name} was not spawned")
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if popen.poll() is not None:
                self._fail(f"exited with status {popen.returncode}")
            listening = listeners(self.port)
            if listening:
                if listening.keys() & sockets(family(popen.pid)):
                    if self.probe():
                        return self
                else:
                    # Some other process holds the port: waiting would only end in a timeout.
                    self._fail(f"port {self.port} is taken by another process")
            if time.monotonic() > deadline:
                self._fail(f"did not answer on port {self.port} within {self.start_timeout_s:.0f}s")
            time.sleep(0.05)

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        # pread leaves the file offset alone: the child shares it.
        fd = self._log.fileno()
        return os.pread(fd, chars, max(0, os.fstat(fd).st_size - chars)).decode(errors="replace")

    def _fail(self, why: str) -> None:
        tail = self.log_tail()
        self.stop(signal.SIGKILL)
        raise ProcessError(f"{self.name} {why}: {' '.join(self.argv)}\n{tail}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        if self._popen is None:
            return
        terminate(self._popen.pid, self._started, sig, timeout_s)
        self._popen.wait()  # reap our child
        self._popen = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FreePortProcess(ManagedProcess):
    """A ``ManagedProcess`` whose command (``command(port)``) names its port.

    Without a port given, it picks a free one; since another process can take that port before this
    one binds it, the first ``start`` tries up to ``attempts`` ports (a port given gets one attempt).
    Once started, the port is this process's: a start after ``stop`` reuses it.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], Sequence[str]],
        *,
        port: int | None = None,
        attempts: int = 3,
        **options,
    ) -> None:
        self.command = command
        self._attempts = 1 if port else attempts
        port = port or free_port()
        super().__init__(name, command(port), port=port, **options)

    def start(self) -> Self:
        for attempt in range(self._attempts):
            try:
                super().start()
            except ProcessError:
                if attempt == self._attempts - 1:
                    raise
                self.port = free_port()  # taken before the process bound it: try another one
                self.argv = list(self.command(self.port))
            else:
                self._attempts = 1
                return self
        return self
