"""The emulator stack without Docker: the emulators, the bootstrap, and every service as its own process.

    with Stack(tmp_path, overrides={"ALLOW_PRIVATE_URLS": "1"}) as stack:
        requests.post(f"{stack.api_url}/api/v2/archive", json={"url": ...})
        stack.kill("archiver-pdf")                   # a crash: the supervisor starts it again
        stack.stop("pubsub"); stack.start("pubsub")  # an outage: down until started (same port)

    python -m emulators.stack up [--root .stack] [--port 8080]   # `make stack-up`: starts it and returns
    python -m emulators.stack up --services ''                   # the emulators alone
    python -m emulators.stack kill|stop|start NAME               # faults, by name: a crash, an outage
    python -m emulators.stack status|down [--root .stack]        # `make stack-down` stops it

Order: emulators (in parallel) -> bootstrap -> services. Everything listens on
127.0.0.1. Everything is supervised as Cloud Run supervises an instance: a
component that exits without being stopped is started again, after a pause
that doubles with each exit in a row. From the command line the supervisor is
a small process of its own (``supervise``) that ``up`` leaves running, and that
``kill``, ``stop``, ``start`` and ``down`` talk to through ``control.sock``.
In the root: ``stack.env`` (the settings every service gets; an operator can
``source`` it), ``logs/<name>.log`` (``supervisor.log``: every restart) and
``pids.json`` (what ``down`` stops, and in which order, if the supervisor is gone).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from emulators import free_port
from emulators.bootstrap import apply, topology
from emulators.cloudtasks import CloudTasksEmulator
from emulators.firestore import FirestoreEmulator
from emulators.gcs import FakeGcsServer
from emulators.postgres import ThrowawayPostgres
from emulators.process import ManagedProcess, alive, family, http_answers, start_ticks, terminate_all
from emulators.pubsub import PubSubEmulator
from htbase.config import PROJECT_ROOT, Settings
from htbase.topology import PUSH_SERVICES, QUEUE_SERVICES, QUEUES, ROUTES

API = "api"
SERVICES: tuple[str, ...] = (API, *PUSH_SERVICES, *QUEUE_SERVICES)
EMULATORS = ("pubsub", "firestore", "gcs", "tasks", "postgres")
SUPERVISOR = "supervisor"
PROJECT = "htbase-local"
SETTING_NAMES = frozenset(f.metadata["env"] for f in dataclasses.fields(Settings))
BIN = Path(sys.executable).parent  # the venv's scripts (not resolved: a venv's python is a symlink)
# These come back empty after a restart: the bootstrap lays their part of the topology again.
EMPTY_AFTER_RESTART = ("pubsub", "tasks")
# The supervisor's pause before starting an exited component again: doubled with each exit in a
# row, back to the first once the component has run STABLE_S.
FIRST_RESTART_DELAY_S, MAX_RESTART_DELAY_S, STABLE_S = 1.0, 30.0, 30.0


def _push_targets() -> dict[str, tuple[str, dict[str, str]]]:
    """Push service -> (functions-framework target, its own env)."""
    return {route.service: (route.target, route.service_env) for route in (*ROUTES, *(q.route for q in QUEUES))}


class Stack:
    def __init__(
        self,
        root: Path | str,
        *,
        api_port: int | None = None,
        database_url: str = "",
        overrides: Mapping[str, str] | None = None,
        services: Iterable[str] = SERVICES,
        supervise: bool = True,
        daemon: bool = False,
    ) -> None:
        """``supervise``: restart what exits on its own, from a thread of this process. ``daemon``: this
        process is the stack's supervisor process, recorded in pids.json so that ``down`` stops it first."""
        self.root = Path(root).resolve()
        self.logs = self.root / "logs"
        self.services = tuple(services)
        unknown = set(self.services) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {SERVICES}")
        self.ports = {name: free_port() for name in SERVICES}
        if api_port:
            self.ports[API] = api_port
        self.pubsub = PubSubEmulator(log_path=self.logs / "pubsub.log")
        self.firestore = FirestoreEmulator(port=free_port(), log_path=self.logs / "firestore.log")
        # Objects on disk: even a crash of the emulator keeps them, as GCS would.
        self.gcs = FakeGcsServer(port=free_port(), log_path=self.logs / "gcs.log", data_dir=self.root / "gcs")
        self.tasks = CloudTasksEmulator(log_path=self.logs / "tasks.log")
        self.postgres = None if database_url else ThrowawayPostgres()
        self.env: dict[str, str] = {
            "DATABASE_URL": self.postgres.url if self.postgres else database_url,
            "FILE_STORAGE_PROVIDER": "gcs",
            "GCS_BUCKET": "htbase-archives",
            "STORAGE_EMULATOR_HOST": self.gcs.endpoint,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "BROKER": "pubsub",
            "PUBSUB_EMULATOR_HOST": self.pubsub.host,
            "PUBSUB_PROJECT_ID": PROJECT,
            "TOPIC_PREFIX": "htbase-",
            "FIRESTORE_EMULATOR_HOST": self.firestore.host,
            "FIRESTORE_PROJECT_ID": PROJECT,
            "CLOUD_TASKS_EMULATOR_HOST": self.tasks.host,
            "PUSH_AUTH_TOKEN": secrets.token_urlsafe(24),
            "WEBHOOK_SECRET": "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            "WEBHOOK_DELIVERY_URL": self.url("webhooks"),  # Cloud Tasks' target for webhook attempts
            "LOG_FORMAT": "json",
            "PORT": str(self.ports[API]),  # so that a shell that sourced stack.env finds the API
            **(overrides or {}),
        }
        self._own_env: dict[str, dict[str, str]] = {}
        self.processes = {name: self._service(name) for name in self.services}
        # Every component by name, in start order.
        self.names = (*(e for e in EMULATORS if e != "postgres" or self.postgres), *self.services)
        self.held: set[str] = set()  # stopped on purpose: the supervisor leaves them down
        self._locks = {name: threading.Lock() for name in self.names}
        self._restarts = {name: _Restarts() for name in self.names}
        self._saving = threading.Lock()
        self._daemon = daemon
        self._supervising = threading.Event()
        self._supervisor = (
            threading.Thread(target=self._supervise, name="stack-supervisor", daemon=True) if supervise else None
        )

    # --- where things are -------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[API]}"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}/"

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def describe(self) -> dict[str, str]:
        """Component -> where it listens."""
        where = {name: self.url(name).rstrip("/") for name in self.services}
        where.update(
            pubsub=self.pubsub.host,
            firestore=self.firestore.host,
            gcs=self.gcs.endpoint,
            tasks=self.tasks.host,
            postgres=self.env["DATABASE_URL"],
        )
        return where

    # --- lifecycle ----------------------------------------------------------------------

    def up(self) -> Stack:
        """Start everything; on any failure stop what already started, then raise."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write_env()
        try:
            emulators: list[ManagedProcess | ThrowawayPostgres | None] = [
                self.pubsub,
                self.firestore,
                self.gcs,
                self.tasks,
                self.postgres,
            ]
            with ThreadPoolExecutor(len(emulators)) as pool:  # independent: start them side by side
                for future in [pool.submit(e.start) for e in emulators if e is not None]:
                    future.result()
            self._save()
            self.bootstrap()
            for process in self.processes.values():  # spawn all, then wait: they start in parallel
                process.spawn()
            self._save()
            for process in self.processes.values():
                process.wait_ready()
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to see
                self.down()
            raise
        if self._supervisor is not None:
            self._supervising.set()
            self._supervisor.start()
        return self

    def bootstrap(self, emulator: str = "") -> None:
        """Lay the topology on the emulators, or only on ``emulator``'s part of it."""
        plan = topology(self.settings, {name: self.url(name) for name in PUSH_SERVICES})
        if emulator:
            plan = dataclasses.replace(
                plan,
                topics=plan.topics if emulator == "pubsub" else (),
                subscriptions=plan.subscriptions if emulator == "pubsub" else (),
                queues=plan.queues if emulator == "tasks" else (),
                bucket=plan.bucket if emulator == "gcs" else "",
            )
        apply(plan, self.settings, tasks_host=self.tasks.host if emulator in ("", "tasks") else "")

    def down(self) -> None:
        """Stop everything this stack started, services first; carries on past failures."""
        if self._supervisor is not None and self._supervising.is_set():
            self._supervising.clear()
            self._supervisor.join()
        # Services all at once (each takes a moment to shut down), then the emulators.
        terminate_all(
            [
                (pid, p.started, signal.SIGTERM)
                for p in self.processes.values()
                if (pid := p.pid) is not None and p.alive
            ]
        )
        stops: list[Callable[[], None]] = [process.stop for process in self.processes.values()]  # reaps them
        stops += [self.tasks.stop, self.gcs.stop, self.firestore.stop, self.pubsub.stop]
        if self.postgres is not None:
            stops.append(self.postgres.stop)
        errors = []
        for stop in stops:
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        for path in self._throwaway():
            shutil.rmtree(path, ignore_errors=True)
        (self.root / "pids.json").unlink(missing_ok=True)
        if errors:
            raise RuntimeError(f"stopping the stack: {errors}")

    def kill(self, name: str) -> None:
        """Crash a component (SIGKILL; Postgres: an immediate shutdown); the supervisor starts it again.
        The emulators keep nothing in memory: Pub/Sub, Cloud Tasks and Firestore come back empty (the
        first two bootstrapped again), GCS with its objects (on disk)."""
        with self._locks[self._known(name)]:
            self._halt(name, crash=True)
        self._note(f"{name} killed")
        self._save()

    def stop(self, name: str) -> None:
        """Stop a component and keep it down until ``start``: an outage. A service or Postgres stops
        (its port refuses connections; Postgres keeps its rows). An emulator is frozen (SIGSTOP): it
        answers nothing, as a managed service in an outage, and loses nothing."""
        with self._locks[self._known(name)]:
            self.held.add(name)
            self._halt(name, crash=False)
        self._note(f"{name} stopped")
        self._save()

    def start(self, name: str) -> None:
        """Start a stopped or killed component again, on the same port."""
        with self._locks[self._known(name)]:
            component = self._component(name)
            if isinstance(component, ManagedProcess) and component.paused:
                component.resume()
            else:
                self._start(name)
            self.held.discard(name)
            self._restarts[name] = _Restarts(up_since=time.monotonic())
        self._note(f"{name} started")
        self._save()

    def alive(self, name: str) -> bool:
        return self._component(self._known(name)).alive

    def use_env(self, service: str, env: Mapping[str, str]) -> None:
        """Before ``up``: run ``service`` with exactly ``env`` as its settings, instead of the stack's and
        its role's (say, the env Terraform gives it on Cloud Run, emulators standing in for the cloud)."""
        self._own_env[service] = dict(env)
        self.processes[service] = self._service(service)

    def pids(self) -> dict[str, int]:
        return {name: record["pid"] for name, record in self._records().items()}

    def __enter__(self) -> Stack:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- internals ---------------------------------------------------------------------

    def _known(self, name: str) -> str:
        if name not in self.names:
            raise ValueError(f"unknown component {name!r}; known: {', '.join(self.names)}")
        return name

    def _component(self, name: str) -> ManagedProcess | ThrowawayPostgres:
        return self.processes[name] if name in self.processes else getattr(self, name)

    def _halt(self, name: str, crash: bool) -> None:
        component = self._component(name)
        if isinstance(component, ThrowawayPostgres):
            component.halt()  # immediate: for PostgreSQL a crash and an outage look alike
        elif name in EMULATORS and not crash:
            component.pause()
        else:
            component.stop(signal.SIGKILL if crash else signal.SIGTERM)

    def _start(self, name: str) -> None:
        self._component(name).start()
        if name in EMPTY_AFTER_RESTART:
            self.bootstrap(name)

    def _supervise(self) -> None:
        """Start again, after a pause, whatever exited without being stopped."""
        while self._supervising.is_set():
            for name in self.names:
                if not self._supervising.is_set():
                    return
                with self._locks[name]:
                    restarted = self._revive(name)
                if restarted:
                    self._save()
            time.sleep(0.25)

    def _revive(self, name: str) -> bool:
        """One look at one component (under its lock); True when it was started again."""
        restarts, now = self._restarts[name], time.monotonic()
        if name in self.held:
            return False
        if self._component(name).alive:
            if now - restarts.up_since > STABLE_S:
                restarts.delay_s = FIRST_RESTART_DELAY_S
            return False
        if restarts.due is None:
            restarts.due = now + restarts.delay_s
            self._note(f"{name} exited; starting it again in {restarts.delay_s:.0f}s")
            return False
        if now < restarts.due:
            return False
        restarts.delay_s = min(restarts.delay_s * 2, MAX_RESTART_DELAY_S)
        try:
            self._start(name)
        except Exception as exc:  # e.g. the API cannot answer while Postgres is down: try again later
            restarts.due = time.monotonic() + restarts.delay_s
            self._note(
                f"{name} did not start ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                f"next try in {restarts.delay_s:.0f}s"
            )
            return False
        restarts.due, restarts.up_since = None, time.monotonic()
        self._note(f"{name} started again")
        return True

    def _note(self, line: str) -> None:
        with self._saving, open(self.logs / "supervisor.log", "a") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    def _service(self, name: str) -> ManagedProcess:
        port = str(self.ports[name])
        if name == API:
            argv = [str(BIN / "htbase"), "serve", "--port", port, "--host", "127.0.0.1"]
            own_env = {"SERVICE_ROLE": "api"}
            probe = lambda: http_answers(f"{self.api_url}/healthz", lambda status: status == 200)  # noqa: E731
        else:
            target, own_env = _push_targets()[name]
            argv = [
                str(BIN / "functions-framework"),
                "--source",
                str(PROJECT_ROOT / "functions" / "main.py"),
                "--target",
                target,
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ]
            # functions-framework answers /robots.txt itself (404): up, without a push reaching the handler.
            probe = lambda: http_answers(f"{self.url(name)}robots.txt")  # noqa: E731
        if name in self._own_env:  # exactly those settings: none of this shell's leaks in
            env = {**{k: v for k, v in os.environ.items() if k not in SETTING_NAMES}, **self._own_env[name]}
        else:
            env = {**os.environ, **self.env, **own_env}
        env["PYTHONUNBUFFERED"] = "1"
        return ManagedProcess(
            name,
            argv,
            port=self.ports[name],
            probe=probe,
            env=env,
            cwd=PROJECT_ROOT,
            log_path=self.logs / f"{name}.log",
        )

    def _records(self) -> dict[str, dict]:
        """What ``stop_recorded`` needs, in stop order for the supervisor and start order for the rest."""
        records = {SUPERVISOR: _record(os.getpid(), 0)} if self._daemon else {}
        if self.postgres is not None and (pid := self.postgres.pid):
            # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
            records["postgres"] = _record(pid, self.postgres.port, "SIGINT")
        for name in ("pubsub", "firestore", "gcs", "tasks"):
            process = getattr(self, name)
            if process.alive:
                records[name] = process.record()
        records.update({name: process.record() for name, process in self.processes.items() if process.alive})
        return records

    def _save(self) -> None:
        with self._saving:
            state = {
                "processes": self._records(),
                "held": sorted(self.held),
                "remove": [str(path) for path in self._throwaway()],
            }
            path = self.root / "pids.json"
            path.with_suffix(".tmp").write_text(json.dumps(state, indent=1))
            path.with_suffix(".tmp").replace(path)  # whole or not at all: `down` may read it any time

    def _throwaway(self) -> list[Path]:
        """The data that goes when the stack does: the GCS emulator's objects, Postgres's cluster."""
        return [self.root / "gcs", *([self.postgres.root] if self.postgres else [])]

    def _write_env(self) -> None:
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.env.items()]
        (self.root / "stack.env").write_text(
            "# the emulator stack's settings: source this file\n" + "\n".join(lines) + "\n"
        )


@dataclasses.dataclass
class _Restarts:
    """The supervisor's view of one component: its next pause, and when it is due to start."""

    delay_s: float = FIRST_RESTART_DELAY_S
    due: float | None = None  # set while it is down and waiting to start again
    up_since: float = 0.0


def _record(pid: int, port: int, sig: str = "SIGTERM") -> dict:
    return {"pid": pid, "started": start_ticks(pid), "port": port, "signal": sig}


def load_records(root: Path) -> dict:
    path = Path(root) / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {"processes": {}, "held": [], "remove": []}


def stop_recorded(root: Path) -> list[str]:
    """Stop by PID what a stack in ``root`` recorded: its supervisor (so that nothing is started
    again), the services, then the emulators; returns the names stopped."""
    state = load_records(root)
    running = {name: r for name, r in state["processes"].items() if alive(r["pid"], r["started"])}
    if SUPERVISOR in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running[SUPERVISOR]["pid"], signal.SIGKILL)  # itself only: its children are stopped below
        while alive(running[SUPERVISOR]["pid"], running[SUPERVISOR]["started"]):
            time.sleep(0.02)
    phases = [[n for n in running if n in SERVICES], [n for n in running if n not in (*SERVICES, SUPERVISOR)]]
    for phase in phases:
        terminate_all(
            [
                (running[n]["pid"], running[n]["started"], getattr(signal, running[n].get("signal", "SIGTERM")))
                for n in phase
            ]
        )
    for path in state["remove"]:
        shutil.rmtree(path, ignore_errors=True)
    (Path(root) / "pids.json").unlink(missing_ok=True)
    return [n for n in running if n == SUPERVISOR] + phases[0] + phases[1]


def recorded_family(root: Path) -> set[int]:
    """Every live process a stack in ``root`` started, children included (for checks that nothing is left)."""
    pids = set()
    for record in load_records(root)["processes"].values():
        if alive(record["pid"], record["started"]):
            pids |= family(record["pid"])
    return pids


# --- the command line: a supervisor process and its control socket ----------------------------------


class ControlError(RuntimeError):
    pass


def control(root: Path, command: str, name: str = "", timeout_s: float = 300.0):
    """Send one command to the supervisor of the stack in ``root``; its answer, or ``ControlError``."""
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(Path(root) / "control.sock"))
            sock.sendall(json.dumps({"command": command, "name": name}).encode() + b"\n")
            answer = json.loads(sock.makefile().readline() or "{}")
    except (OSError, ValueError) as exc:
        raise ControlError(f"no supervisor answers in {root} ({exc}): is the stack up (make stack-up)?") from None
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "no answer"))
    return answer["result"]


def supervise(stack: Stack) -> None:
    """Run ``stack`` and answer ``control`` on its socket until ``down`` (or SIGTERM).

    ``describe`` answers where everything listens; ``kill``, ``stop`` and ``start`` take a name;
    ``down`` answers once everything has stopped."""
    asked_down, stopped = threading.Event(), threading.Event()
    commands = {"kill": stack.kill, "stop": stack.stop, "start": stack.start}

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = json.loads(self.rfile.readline() or "{}")
            command, name = request.get("command"), request.get("name", "")
            result: dict[str, str] | str
            try:
                if command == "describe":
                    result = stack.describe()
                elif command == "down":
                    asked_down.set()
                    stopped.wait()
                    result = "down"
                elif command in commands:
                    commands[command](name)
                    result = f"{command} {name}"
                else:
                    raise ValueError(f"unknown command {command!r}")
                answer = {"ok": True, "result": result}
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            self.wfile.write(json.dumps(answer).encode() + b"\n")

    path = stack.root / "control.sock"
    path.unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: asked_down.set())
    stack.up()
    server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        asked_down.wait()
    finally:
        path.unlink(missing_ok=True)
        stack.down()
        stopped.set()
        server.shutdown()
        server.server_close()  # after the answers in flight, `down`'s among them, have gone out


def up(args: argparse.Namespace, root: Path) -> int:
    """Start a supervisor process that starts the stack; return once the stack is up."""
    if any(alive(r["pid"], r["started"]) for r in load_records(root)["processes"].values()):
        print(f"a stack is already running in {root}: stop it first (make stack-down)", file=sys.stderr)
        return 1
    stop_recorded(root)  # nothing runs, but a stale record (say, from before a reboot) may leave files
    (root / "logs").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    argv = [
        sys.executable,
        "-m",
        "emulators.stack",
        "supervise",
        "--root",
        str(root),
        "--port",
        str(args.port),
        "--database-url",
        args.database_url,
        "--services",
        args.services,
        *(f"--set={s}" for s in args.set),
    ]
    with open(root / "logs" / "stack.log", "ab") as log:
        daemon = subprocess.Popen(
            argv,
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    while True:
        if daemon.poll() is not None:
            tail = (root / "logs" / "stack.log").read_text(errors="replace")[-3000:]
            print(f"the stack did not start:\n{tail}", file=sys.stderr)
            return 1
        with contextlib.suppress(ControlError):
            where = control(root, "describe", timeout_s=2)
            break
        time.sleep(0.2)
    print(
        f"emulator stack up in {time.monotonic() - started:.1f}s, supervised by pid {daemon.pid}; "
        f"settings: source {root / 'stack.env'}; logs: {root / 'logs'}/"
    )
    for name, address in where.items():
        print(f"  {name:<22} {address}")
    print("stop it with: make stack-down")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.stack", description="the emulator stack")
    parser.add_argument(
        "command",
        choices=("up", "down", "status", "kill", "stop", "start", "supervise"),
        help="supervise: run the stack in the foreground (what `up` starts and leaves running)",
    )
    parser.add_argument("name", nargs="?", default="", help="the component to kill, stop or start")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / ".stack", help="state dir (default .stack)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8080), help="the API's port")
    parser.add_argument("--database-url", default="", help="an existing PostgreSQL (default: a throwaway one)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every service, e.g. --set ALLOW_PRIVATE_URLS=1",
    )
    parser.add_argument(
        "--services",
        default=",".join(SERVICES),
        help="which services to start, comma-separated ('' for the emulators alone; default all)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "up":
        return up(args, root)
    if args.command == "supervise":
        supervise(
            Stack(
                root,
                api_port=args.port,
                database_url=args.database_url,
                overrides=dict(item.split("=", 1) for item in args.set),
                services=[name for name in args.services.split(",") if name],
                daemon=True,
            )
        )
        return 0
    if args.command in ("kill", "stop", "start"):
        try:
            print(control(root, args.command, args.name))
        except ControlError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    if args.command == "down":
        supervisor = load_records(root)["processes"].get(SUPERVISOR)
        with contextlib.suppress(ControlError):
            control(root, "down")
            deadline = time.monotonic() + 30
            while supervisor and alive(supervisor["pid"], supervisor["started"]) and time.monotonic() < deadline:
                time.sleep(0.05)  # it has stopped everything and is on its way out
        stopped = stop_recorded(root)  # whatever a supervisor that is gone left running
        print(f"stopped {', '.join(stopped)}" if stopped else f"stack in {root} stopped")
        return 0
    state = load_records(root)
    if not state["processes"]:
        print(f"no stack recorded in {root}")
    for name, record in state["processes"].items():
        condition = "stopped" if name in state["held"] else "up" if alive(record["pid"], record["started"]) else "gone"
        print(f"{name:<22} {condition:<7} pid {record['pid']:<8} port {record['port'] or '-'}")
    for name in sorted(set(state["held"]) - set(state["processes"])):
        print(f"{name:<22} stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
