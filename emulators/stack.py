"""The emulator stack without Docker: the emulators, the bootstrap, and every service as its own process.

    with Stack(tmp_path, overrides={"ALLOW_PRIVATE_URLS": "1"}) as stack:
        requests.post(f"{stack.api_url}/api/v2/archive", json={"url": ...})
        stack.stop_service("archiver-pdf", signal.SIGKILL); stack.start_service("archiver-pdf")
        stack.stop_emulator("pubsub"); stack.start_emulator("pubsub")   # same port, bootstrapped again

    python -m emulators.stack up [--root .stack] [--port 8080]   # `make stack-up`: starts it and returns
    python -m emulators.stack up --services ''                   # the emulators alone
    python -m emulators.stack status|down [--root .stack]        # `make stack-down` stops it by PID

Order: emulators (in parallel) -> bootstrap -> services. Everything listens on
127.0.0.1. In the root: ``stack.env`` (the settings every service gets; an
operator can ``source`` it), ``logs/<name>.log`` and ``pids.json`` (what
``down`` stops, and in which order).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Mapping

from emulators import free_port
from emulators.bootstrap import bootstrap
from emulators.cloudtasks import CloudTasksEmulator
from emulators.firestore import FirestoreEmulator
from emulators.gcs import FakeGcsServer
from emulators.postgres import ThrowawayPostgres
from emulators.process import ManagedProcess, alive, family, http_answers, start_ticks, terminate_all
from emulators.pubsub import PubSubEmulator
from htbase.config import PROJECT_ROOT, Settings
from htbase.topology import PUSH_SERVICES, ROUTES

API = "api"
SERVICES: tuple[str, ...] = (API, *PUSH_SERVICES)
EMULATORS = ("pubsub", "firestore", "gcs", "tasks", "postgres")
PROJECT = "htbase-local"
BIN = Path(sys.executable).parent  # the venv's scripts (not resolved: a venv's python is a symlink)


def _push_targets() -> dict[str, tuple[str, dict[str, str]]]:
    """Push service -> (functions-framework target, its own env)."""
    return {route.service: (route.target, route.service_env) for route in ROUTES}


class Stack:
    def __init__(self, root: Path | str, *, api_port: int | None = None, database_url: str = "",
                 overrides: Mapping[str, str] | None = None, services: Iterable[str] = SERVICES) -> None:
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
        self.gcs = FakeGcsServer(port=free_port(), log_path=self.logs / "gcs.log")
        self.tasks = CloudTasksEmulator(log_path=self.logs / "tasks.log")
        self.postgres = None if database_url else ThrowawayPostgres()
        self.env: dict[str, str] = {
            "DATABASE_URL": database_url or self.postgres.url,
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
            "LOG_FORMAT": "json",
            "PORT": str(self.ports[API]),  # so that a shell that sourced stack.env finds the API
            **(overrides or {}),
        }
        self.processes = {name: self._service(name) for name in self.services}

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
        where.update(pubsub=self.pubsub.host, firestore=self.firestore.host, gcs=self.gcs.endpoint,
                     tasks=self.tasks.host, postgres=self.env["DATABASE_URL"])
        return where

    # --- lifecycle ----------------------------------------------------------------------

    def up(self) -> "Stack":
        """Start everything; on any failure stop what already started, then raise."""
        self.logs.mkdir(parents=True, exist_ok=True)
        self._write_env()
        try:
            emulators = [self.pubsub, self.firestore, self.gcs, self.tasks, self.postgres]
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
        return self

    def bootstrap(self) -> None:
        bootstrap(self.settings, {name: self.url(name) for name in PUSH_SERVICES}, tasks_host=self.tasks.host)

    def down(self) -> None:
        """Stop everything this stack started, services first; carries on past failures."""
        # Services all at once (each takes a moment to shut down), then the emulators.
        terminate_all([(p.pid, p.started, signal.SIGTERM) for p in self.processes.values() if p.alive])
        stops = [process.stop for process in self.processes.values()]  # reaps them
        stops += [self.tasks.stop, self.gcs.stop, self.firestore.stop, self.pubsub.stop]
        if self.postgres is not None:
            stops.append(self.postgres.stop)
        errors = []
        for stop in stops:
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                errors.append(exc)
        (self.root / "pids.json").unlink(missing_ok=True)
        if errors:
            raise RuntimeError(f"stopping the stack: {errors}")

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop a service (``signal.SIGKILL``: as a crash would)."""
        self.processes[name].stop(sig)
        self._save()

    def start_service(self, name: str) -> None:
        """Start a stopped service again, on the same port its subscription pushes to."""
        self.processes[name].start()
        self._save()

    def stop_emulator(self, name: str) -> None:
        self._emulator(name, stop=True)
        self._save()

    def start_emulator(self, name: str) -> None:
        """Start an emulator again on the same port; Pub/Sub, Cloud Tasks and GCS come back empty,
        so the bootstrap runs again."""
        self._emulator(name, stop=False)
        if name in ("pubsub", "tasks", "gcs"):
            self.bootstrap()
        self._save()

    def pids(self) -> dict[str, int]:
        return {name: record["pid"] for name, record in self._records().items()}

    def __enter__(self) -> "Stack":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- internals ---------------------------------------------------------------------

    def _service(self, name: str) -> ManagedProcess:
        port = str(self.ports[name])
        if name == API:
            argv = [str(BIN / "htbase"), "serve", "--port", port, "--host", "127.0.0.1"]
            own_env = {"SERVICE_ROLE": "api"}
            probe = lambda: http_answers(f"{self.api_url}/healthz", lambda status: status == 200)  # noqa: E731
        else:
            target, own_env = _push_targets()[name]
            argv = [str(BIN / "functions-framework"), "--source", str(PROJECT_ROOT / "functions" / "main.py"),
                    "--target", target, "--host", "127.0.0.1", "--port", port]
            # functions-framework answers /robots.txt itself (404): up, without a push reaching the handler.
            probe = lambda: http_answers(f"{self.url(name)}robots.txt")  # noqa: E731
        env = {**os.environ, **self.env, **own_env, "PYTHONUNBUFFERED": "1"}
        return ManagedProcess(name, argv, port=self.ports[name], probe=probe, env=env, cwd=PROJECT_ROOT,
                              log_path=self.logs / f"{name}.log")

    def _emulator(self, name: str, stop: bool) -> None:
        if name == "postgres":
            if self.postgres is None:
                raise ValueError("this stack uses an existing database, not its own")
            self.postgres.halt() if stop else self.postgres.start()
        elif name in ("pubsub", "firestore", "gcs", "tasks"):
            emulator = getattr(self, name)
            emulator.stop() if stop else emulator.start()
        else:
            raise ValueError(f"unknown emulator {name!r}; known: {EMULATORS}")

    def _records(self) -> dict[str, dict]:
        """What ``stop_recorded`` needs, in start order."""
        records = {}
        if self.postgres is not None:
            pid_file = self.postgres.data / "postmaster.pid"
            if pid_file.exists():
                # SIGINT: PostgreSQL's fast shutdown (SIGTERM would wait for every client to leave).
                records["postgres"] = _record(int(pid_file.read_text().split()[0]), self.postgres.port, "SIGINT")
        for name in ("pubsub", "firestore", "gcs", "tasks"):
            process = getattr(self, name)
            if process.alive:
                records[name] = process.record()
        records.update({name: process.record() for name, process in self.processes.items() if process.alive})
        return records

    def _save(self) -> None:
        state = {"processes": self._records(), "remove": [str(self.postgres.root)] if self.postgres else []}
        (self.root / "pids.json").write_text(json.dumps(state, indent=1))

    def _write_env(self) -> None:
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.env.items()]
        (self.root / "stack.env").write_text("# the emulator stack's settings: source this file\n"
                                             + "\n".join(lines) + "\n")


def _record(pid: int, port: int, sig: str = "SIGTERM") -> dict:
    return {"pid": pid, "started": start_ticks(pid), "port": port, "signal": sig}


def load_records(root: Path) -> dict:
    path = Path(root) / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {"processes": {}, "remove": []}


def stop_recorded(root: Path) -> list[str]:
    """Stop by PID what a stack in ``root`` recorded, services first; returns the names stopped."""
    state = load_records(root)
    running = {name: r for name, r in state["processes"].items() if alive(r["pid"], r["started"])}
    phases = [[n for n in running if n in SERVICES], [n for n in running if n not in SERVICES]]
    for phase in phases:
        terminate_all([(running[n]["pid"], running[n]["started"], getattr(signal, running[n].get("signal", "SIGTERM")))
                       for n in phase])
    for path in state["remove"]:
        shutil.rmtree(path, ignore_errors=True)
    (Path(root) / "pids.json").unlink(missing_ok=True)
    return phases[0] + phases[1]


def recorded_family(root: Path) -> set[int]:
    """Every live process a stack in ``root`` started, children included (for checks that nothing is left)."""
    pids = set()
    for record in load_records(root)["processes"].values():
        if alive(record["pid"], record["started"]):
            pids |= family(record["pid"])
    return pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.stack", description="the emulator stack")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / ".stack", help="state dir (default .stack)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8080), help="the API's port")
    parser.add_argument("--database-url", default="", help="an existing PostgreSQL (default: a throwaway one)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for every service, e.g. --set ALLOW_PRIVATE_URLS=1")
    parser.add_argument("--services", default=",".join(SERVICES),
                        help="which services to start, comma-separated ('' for the emulators alone; default all)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.command == "down":
        stopped = stop_recorded(root)
        print(f"stopped {', '.join(stopped)}" if stopped else f"nothing recorded as running in {root}")
        return 0
    if args.command == "status":
        records = load_records(root)["processes"]
        if not records:
            print(f"no stack recorded in {root}")
        for name, record in records.items():
            state = "up" if alive(record["pid"], record["started"]) else "gone"
            print(f"{name:<22} {state:<5} pid {record['pid']:<8} port {record['port']}")
        return 0
    if any(alive(r["pid"], r["started"]) for r in load_records(root)["processes"].values()):
        print(f"a stack is already running in {root}: stop it first (make stack-down)", file=sys.stderr)
        return 1
    stop_recorded(root)  # nothing runs, but a stale record (say, from before a reboot) may leave files
    overrides = dict(item.split("=", 1) for item in args.set)
    started = time.monotonic()
    services = [name for name in args.services.split(",") if name]
    stack = Stack(root, api_port=args.port, database_url=args.database_url, overrides=overrides,
                  services=services).up()
    print(f"emulator stack up in {time.monotonic() - started:.1f}s; settings: source {root / 'stack.env'}; "
          f"logs: {stack.logs}/")
    for name, where in stack.describe().items():
        print(f"  {name:<22} {where}")
    print("stop it with: make stack-down")
    return 0  # the processes run on: `down` stops them by PID


if __name__ == "__main__":
    raise SystemExit(main())
