"""The ``htbase`` command: ``htbase serve``, ``htbase migrate`` and ``htbase archive URL``."""
from __future__ import annotations

import argparse
import atexit
import sys
import time

import requests

from htbase.config import ConfigError, Settings
from htbase.logs import setup_logging
from infra.identity import with_project

TERMINAL = ("success", "partial", "failed", "cancelled")


def serve(settings: Settings) -> int:
    """The all-in-one process, or with SERVICE_ROLE=api the API alone (publishing to Pub/Sub)."""
    if settings.service_role == "api":
        return _serve_api(settings)
    if settings.service_role != "all-in-one":
        print(f"SERVICE_ROLE={settings.service_role} runs under functions-framework, e.g. "
              "functions-framework --source functions/main.py --target archive_pdf", file=sys.stderr)
        return 2
    from werkzeug.serving import make_server

    from service.embedded import EmbeddedService

    # One process: the in-process dispatcher's queue lives here.
    with EmbeddedService(settings) as service:
        server = make_server(settings.host, settings.port, service.api, threaded=True)
        print(f"htbase serving on http://{settings.host}:{settings.port}/api/v2 "
              f"(ledger {settings.database_url}, files {settings.local_storage_path})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def _serve_api(settings: Settings) -> int:
    """The API under gunicorn: WEB_CONCURRENCY processes, so it is not held to one core by the GIL."""
    from gunicorn.app.base import BaseApplication

    from infra.db import migrate_database
    from service.api import ApiService

    if settings.run_migrations:
        # Once, before the workers start, so they never race to create the schema. The engine
        # (and a Cloud SQL connector, which a fork would break) is disposed before they fork.
        migrate_database(settings)

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in {"bind": f"{settings.host}:{settings.port}", "workers": settings.web_workers,
                               "worker_class": "gthread", "threads": 16, "graceful_timeout": 10,
                               "loglevel": settings.log_level.lower()}.items():
                self.cfg.set(key, value)

        def load(self):  # in each worker, after the fork: its own pools, clients and housekeeper
            service = ApiService(settings).start()
            atexit.register(service.close)  # Cloud Run's SIGTERM: the pool and the Cloud SQL connector close
            return service.api

    print(f"htbase API serving on http://{settings.host}:{settings.port}/api/v2 "
          f"({settings.web_workers} workers, broker {settings.broker})", flush=True)
    Gunicorn().run()
    return 0


def _render(task: dict) -> list[str]:
    lines = [f"{task['task_id']}  {task['status']:<10} {int(task['progress'] * 100):>3}%  {task.get('url', '')}"]
    for name, sub in task.get("subtasks", {}).items():
        detail = sub.get("error") or (f"{sub['artifact']['size']:,} bytes" if "artifact" in sub else "")
        lines.append(f"  {name:<12} {sub['status']:<10} {detail}")
    return lines


def archive(api: str, url: str, archivers: list[str] | None, wait: bool, timeout: float) -> int:
    body: dict = {"url": url}
    if archivers:
        body["archivers"] = archivers
    try:
        response = requests.post(f"{api}/api/v2/archive", json=body, timeout=30)
    except requests.ConnectionError:
        print(f"no htbase answers at {api}; start one with `htbase serve`", file=sys.stderr)
        return 2
    if response.status_code != 202:
        print(f"refused ({response.status_code}): {response.json()['error']['message']}", file=sys.stderr)
        return 2
    accepted = response.json()
    print(f"accepted: task {accepted['task_id']}")
    if not wait:
        return 0
    live, drawn, deadline = sys.stdout.isatty(), [], time.monotonic() + timeout
    while True:
        task = requests.get(f"{api}{accepted['status_url']}", timeout=30).json()
        lines = _render(task)
        if lines != drawn:
            if live and drawn:
                sys.stdout.write(f"\x1b[{len(drawn)}F\x1b[J")  # redraw in place on a terminal
            print("\n".join(lines), flush=True)
            drawn = lines
        if task["status"] in TERMINAL:
            return 0 if task["status"] == "success" else 1
        if time.monotonic() > deadline:
            print(f"still {task['status']} after {timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="htbase", description="Archive web pages five ways.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the all-in-one service (API, archivers, summarizer)")
    serve_cmd.add_argument("--port", type=int, help="port (default $PORT or 8080)")
    serve_cmd.add_argument("--host", help="address to bind (default $HOST or 127.0.0.1)")
    commands.add_parser("migrate", help="bring the ledger's schema to the newest revision (the Cloud Run job)")
    archive_cmd = commands.add_parser("archive", help="archive a URL through a running htbase")
    archive_cmd.add_argument("url")
    archive_cmd.add_argument("--archivers", help="comma-separated (default: all)")
    archive_cmd.add_argument("--wait", action="store_true", help="show live progress until the task ends")
    archive_cmd.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    archive_cmd.add_argument("--api", help="htbase base URL (default http://127.0.0.1:$PORT)")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command in ("serve", "migrate"):
        try:
            settings = with_project(settings)
            setup_logging(settings)
            if args.command == "migrate":
                from infra.db import migrate_database

                migrate_database(settings)
                return 0
            return serve(settings.with_(port=args.port or settings.port, host=args.host or settings.host))
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
    api = (args.api or f"http://127.0.0.1:{settings.port}").rstrip("/")
    archivers = [a.strip() for a in args.archivers.split(",")] if args.archivers else None
    return archive(api, args.url, archivers, args.wait, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
