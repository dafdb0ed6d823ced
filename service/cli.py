"""The ``htbase`` command.

The service: ``serve``, ``migrate``, and ``keys`` (create, list, revoke: straight in the
ledger that ``DATABASE_URL`` names; new: a key and its record, without a ledger). A client
of a running htbase (``HTBASE_URL``, with the key in ``HTBASE_API_KEY``): ``archive``, ``list``,
``show``, ``get``, ``import``, ``cancel``, ``delete``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import requests

from htbase.config import ConfigError, Settings
from htbase.logs import setup_logging
from infra.identity import with_project

API = "/api/v2"
TERMINAL = ("success", "partial", "failed", "cancelled")


class Refused(Exception):
    """The API said no, or nothing answered, or a key cannot be made: the message is for the user (exit 2)."""


def serve(settings: Settings) -> int:
    """The all-in-one process, or with SERVICE_ROLE=api the API alone (publishing to Pub/Sub)."""
    if settings.service_role == "api":
        return _serve_api(settings)
    if settings.service_role != "all-in-one":
        print(
            f"SERVICE_ROLE={settings.service_role} runs under functions-framework, e.g. "
            "functions-framework --source functions/main.py --target archive_pdf",
            file=sys.stderr,
        )
        return 2
    from werkzeug.serving import make_server

    from api.auth import start_notice
    from infra.keys import ApiKeys
    from service.embedded import EmbeddedService

    # One process: the in-process dispatcher's queue lives here.
    with EmbeddedService(settings) as service:
        access = start_notice(settings, ApiKeys(service.runtime.engine))
        server = make_server(settings.host, settings.port, service.api, threaded=True)
        print(
            f"htbase serving on http://{settings.host}:{settings.port}/api/v2 "
            f"(ledger {settings.database_url}, files {settings.local_storage_path})\n{access}",
            flush=True,
        )
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

    from api.auth import start_notice
    from infra.db import make_engine, migrate_database
    from infra.keys import ApiKeys
    from service.api import ApiService

    if settings.run_migrations:
        # Once, before the workers start, so they never race to create the schema. The engine
        # (and a Cloud SQL connector, which a fork would break) is disposed before they fork.
        migrate_database(settings)
    engine = make_engine(settings)
    try:
        access = start_notice(settings, ApiKeys(engine))
    finally:
        engine.dispose()

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.web_workers,
                "worker_class": "gthread",
                "threads": 16,
                "graceful_timeout": 10,
                "loglevel": settings.log_level.lower(),
            }.items():
                self.cfg.set(key, value)

        def load(self):  # in each worker, after the fork: its own pools, clients and housekeeper
            service = ApiService(settings).start()
            atexit.register(service.close)  # Cloud Run's SIGTERM: the pool and the Cloud SQL connector close
            return service.api

    print(
        f"htbase API serving on http://{settings.host}:{settings.port}/api/v2 "
        f"({settings.web_workers} workers, broker {settings.broker})\n{access}",
        flush=True,
    )
    Gunicorn().run()
    return 0


FIRST_ADMIN_KEY = "first admin (FIRST_ADMIN_KEY_RECORD)"


def migrate(settings: Settings) -> int:
    """The schema to its newest revision, then the first admin key that ``FIRST_ADMIN_KEY_RECORD``
    describes, unless a key with its prefix exists: the migrate job runs it before every roll-out."""
    from infra.db import make_engine, migrate_database
    from infra.keys import ApiKeys

    migrate_database(settings)
    if not settings.first_admin_key_record:
        return 0
    engine = make_engine(settings)
    try:
        added = ApiKeys(engine).add_record(settings.first_admin_key_record, FIRST_ADMIN_KEY, "admin")
    finally:
        engine.dispose()
    prefix = settings.first_admin_key_record.split(":")[0]
    print(f"first admin key {prefix}: {'added' if added else 'already there'}", flush=True)
    return 0


def keys(settings: Settings, args: argparse.Namespace) -> int:
    """API keys, straight in the ledger (the schema migrated first, as ``serve`` does); ``new`` needs none."""
    from infra.db import make_engine, migrate_database
    from infra.keys import ApiKeys, KeyRequestError, new_key

    if args.keys_command == "new":
        key, record = new_key()
        print("a new admin key, shown once: keep it now (nothing stores it)")
        print(key)
        print("its record, for FIRST_ADMIN_KEY_RECORD (Terraform: first_admin_key_record); not secret")
        print(record)  # the last line, for scripts
        return 0
    if settings.run_migrations:
        migrate_database(settings)
    engine = make_engine(settings)
    try:
        store = ApiKeys(engine)
        if args.keys_command == "create":
            try:
                info, key = store.create(args.name, args.scope)
            except KeyRequestError as exc:
                raise Refused(str(exc)) from None
            print(f"made key {info.prefix} ({info.name}, {info.scope}); it is shown once, keep it now:")
            print(key)  # the last line, for scripts
        elif args.keys_command == "list":
            for info in store.list():
                state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "live"
                print(f"{info.prefix}  {info.scope:<6} {state:<24} {info.created_at:%Y-%m-%d %H:%M}  {info.name}")
        elif (revoked := store.revoke(args.prefix)) is None:
            raise Refused(f"no live key {args.prefix}")
        else:
            print(f"revoked key {revoked.prefix} ({revoked.name})")
    finally:
        engine.dispose()
    return 0


class Client:
    """A running htbase's API, with the key ``HTBASE_API_KEY`` holds."""

    def __init__(self, base: str, key: str) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        if key:
            self.session.headers["Authorization"] = f"Bearer {key}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.base}{path}", timeout=30, **kwargs)
        except requests.ConnectionError:
            raise Refused(f"no htbase answers at {self.base}; start one with `htbase serve`") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise Refused(f"refused ({response.status_code}): {message}")
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> dict:
        return self.call(method, path, **kwargs).json()


def _render(task: dict) -> list[str]:
    lines = [f"{task['task_id']}  {task['status']:<10} {int(task['progress'] * 100):>3}%  {task.get('url', '')}"]
    for name, sub in task.get("subtasks", {}).items():
        detail = sub.get("error") or (f"{sub['artifact']['size']:,} bytes" if "artifact" in sub else "")
        lines.append(f"  {name:<12} {sub['status']:<10} {detail}")
    return lines


def _fetchable(client: Client, task: dict) -> list[str]:
    """Where each stored file and the summary can be fetched."""
    lines = [
        f"  {name:<12} {client.base}{sub['artifact']['url']}"
        for name, sub in task.get("subtasks", {}).items()
        if "artifact" in sub
    ]
    article = task.get("subtasks", {}).get("readability", {})
    if "artifact" in article:
        summary = task.get("summary_url") or f"{API}/summaries/{task['task_id']}"
        lines += [
            f"  {'text':<12} {client.base}{article['artifact']['url']}?format=txt",
            f"  {'summary':<12} {client.base}{summary}",
        ]
    return ["fetch:", *lines] if lines else []


def events(client: Client, task_id: str, deadline: float) -> Iterator[dict]:
    """The task's documents from its server-sent events, until the terminal one (or ``{}``: the task was
    deleted). A stream that closes before that (the server ends each after a while) is opened again after
    the ``retry`` it asked for, with ``Last-Event-ID``, as a browser's EventSource does."""
    last_id, retry_s = "", 2.0
    while time.monotonic() < deadline:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        with client.call("GET", f"{API}/tasks/{task_id}/events", headers=headers, stream=True) as response:
            for event in _sse(response):
                if "retry" in event and event["retry"].isdigit():
                    retry_s = int(event["retry"]) / 1000
                last_id = event.get("id", last_id)
                if event.get("event") == "task.deleted":
                    yield {}
                    return
                if "data" in event:
                    yield json.loads(event["data"])
                    if event.get("event") == "task.completed":
                        return
                if time.monotonic() >= deadline:
                    return
        time.sleep(retry_s)


def _sse(response: requests.Response) -> Iterator[dict[str, str]]:
    """The fields of each event of a ``text/event-stream``, ``data`` lines joined; a comment is a field-less
    event, so that a keep-alive lets the caller look at the clock."""
    event: dict[str, str] = {}
    try:
        for raw in response.iter_lines():
            line = raw.decode()  # an event stream is UTF-8 whatever its header says
            if not line:
                yield event
                event = {}
            elif line.startswith(":"):
                yield {}  # a keep-alive
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                event[name] = f"{event[name]}\n{value}" if name == "data" and "data" in event else value
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        return  # the stream broke: the caller opens it again


def archive(client: Client, url: str, archivers: list[str] | None, wait: bool, timeout: float) -> int:
    body: dict = {"url": url}
    if archivers:
        body["archivers"] = archivers
    accepted = client.json("POST", f"{API}/archive", json=body)
    print(f"accepted: task {accepted['task_id']} (item {accepted['item_id']})")
    if not wait:
        return 0
    drawn: list[str] = []
    live, task = sys.stdout.isatty(), accepted
    for task in events(client, accepted["task_id"], time.monotonic() + timeout):
        if not task:
            print(f"task {accepted['task_id']} was deleted", file=sys.stderr)
            return 1
        lines = _render(task)
        if lines != drawn:
            if live and drawn:
                sys.stdout.write(f"\x1b[{len(drawn)}F\x1b[J")  # redraw in place on a terminal
            print("\n".join(lines), flush=True)
            drawn = lines
    if task["status"] in TERMINAL:
        print("\n".join(_fetchable(client, task)), flush=True)
        return 0 if task["status"] == "success" else 1
    print(f"still {task['status']} after {timeout:.0f}s", file=sys.stderr)
    return 1


def list_tasks(client: Client, limit: int) -> int:
    page = client.json("GET", f"{API}/tasks", params={"limit": limit})
    for task in page["tasks"]:
        what = task.get("url") or f"batch of {task.get('items_count', 0)}"
        print(
            f"{task['task_id']}  {task['status']:<10} {int(task['progress'] * 100):>3}%  {task['created_at']}  {what}"
        )
    print(f"{len(page['tasks'])} of {page['total']}")
    return 0


def show(client: Client, task_id: str) -> int:
    task = client.json("GET", f"{API}/tasks/{task_id}")
    for member in task.get("items") or [task]:
        print("\n".join(_render(member) + _fetchable(client, member)))
    return 0


def get(client: Client, archive_id: str, name: str, output: str | None) -> int:
    """One file: FORMAT is an archiver, ``all`` (a zip) or ``readability.txt`` (a format stored beside one)."""
    archiver, _, extra = name.partition(".")
    response = client.call(
        "GET", f"{API}/archives/{archive_id}/{archiver}", params={"format": extra} if extra else None, stream=True
    )
    if output is None:
        found = re.search(r'filename="([^"]+)"', response.headers.get("Content-Disposition", ""))
        output = found[1] if found else f"{archive_id}-{name}"
    with response, nullcontext(sys.stdout.buffer) if output == "-" else open(output, "wb") as target:
        for chunk in response.iter_content(64 * 1024):
            target.write(chunk)
    if output != "-":
        print(f"saved {Path(output).stat().st_size:,} bytes to {output}")
    return 0


def cancel(client: Client, task_id: str) -> int:
    task = client.json("POST", f"{API}/tasks/{task_id}/cancel")
    print(f"task {task_id}: {task.get('status', 'cancelled')}")
    return 0


def delete(client: Client, archive_id: str, item: bool) -> int:
    """A task (a batch with its tasks) or, with ``--item``, an item with every snapshot."""
    what = "item" if item else "task"
    client.call("DELETE", f"{API}/{what}s/{archive_id}")
    print(f"deleted {what} {archive_id}")
    return 0


def import_file(client: Client, path: str, recapture: bool, wait: bool) -> int:
    """Upload a bookmark file; with ``--wait``, show its progress until every capture it started ended."""
    with open(path, "rb") as data:
        found = client.json(
            "POST", f"{API}/import", files={"file": (Path(path).name, data)}, data={"recapture": str(recapture).lower()}
        )
    print(
        f"import {found['import_id']}: {found['total']} URLs, "
        + ", ".join(f"{n} {outcome}" for outcome, n in found["counts"].items())
    )
    while wait and found["status"] != "done":
        time.sleep(2)
        found = client.json("GET", found["status_url"], params={"limit": 1})
        print(
            f"  started {found['counts'].get('started', 0)}, queued {found['counts'].get('queued', 0)}; "
            f"captures running {found['captures'].get('running', 0)}, "
            f"finished {found['captures'].get('finished', 0)}",
            flush=True,
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="htbase", description="Archive web pages five ways.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="run the all-in-one service (API, archivers, summarizer)")
    serve_cmd.add_argument("--port", type=int, help="port (default $PORT or 8080)")
    serve_cmd.add_argument("--host", help="address to bind (default $HOST or 127.0.0.1)")
    commands.add_parser("migrate", help="bring the ledger's schema to the newest revision (the Cloud Run job)")
    keys_cmd = commands.add_parser("keys", help="API keys in the ledger that DATABASE_URL names")
    keys_commands = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create_cmd = keys_commands.add_parser("create", help="make a key; it is printed once, as the last line")
    create_cmd.add_argument("--name", required=True, help="who or what holds it")
    create_cmd.add_argument(
        "--scope",
        required=True,
        choices=("read", "write", "admin"),
        help="read: GET; write: also submit; admin: also delete and manage keys",
    )
    keys_commands.add_parser("list", help="every key made (never the keys themselves)")
    keys_commands.add_parser(
        "new",
        help="make a key without a ledger: print it and its record, which `htbase migrate` adds as the first "
        "admin key from FIRST_ADMIN_KEY_RECORD",
    )
    revoke_cmd = keys_commands.add_parser("revoke", help="refuse a key from now on")
    revoke_cmd.add_argument("prefix", help="the 8 characters after htb_")

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--api", help="htbase base URL (default $HTBASE_URL, else http://127.0.0.1:$PORT)")
    archive_cmd = commands.add_parser("archive", parents=[client], help="archive a URL through a running htbase")
    archive_cmd.add_argument("url")
    archive_cmd.add_argument("--archivers", help="comma-separated (default: all)")
    archive_cmd.add_argument("--wait", action="store_true", help="show live progress until the task ends")
    archive_cmd.add_argument("--timeout", type=float, default=600, help="seconds to wait (default 600)")
    list_cmd = commands.add_parser("list", parents=[client], help="the newest tasks")
    list_cmd.add_argument("--limit", type=int, default=20)
    commands.add_parser("show", parents=[client], help="a task and where its files are").add_argument("id")
    get_cmd = commands.add_parser("get", parents=[client], help="download a file of a task or item")
    get_cmd.add_argument("id", help="a task id or an item id")
    get_cmd.add_argument("format", help="an archiver, `all` (a zip) or `readability.txt` (the article's text)")
    get_cmd.add_argument("-o", "--output", help="the file to write (default: the served name; - for stdout)")
    import_cmd = commands.add_parser(
        "import",
        parents=[client],
        help="import a bookmark file (browser HTML, Pocket CSV, a list of URLs) and capture what is new",
    )
    import_cmd.add_argument("file")
    import_cmd.add_argument("--recapture", action="store_true", help="capture URLs already archived once more")
    import_cmd.add_argument("--wait", action="store_true", help="show progress until every capture ended")
    commands.add_parser("cancel", parents=[client], help="cancel a task's pending captures").add_argument("id")
    delete_cmd = commands.add_parser("delete", parents=[client], help="delete a task or an item and its files (admin)")
    delete_cmd.add_argument("id", help="a task id, or with --item an item id")
    delete_cmd.add_argument("--item", action="store_true", help="delete the item ID: every snapshot of it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command in ("serve", "migrate", "keys"):
            settings = with_project(settings)
            setup_logging(settings)
        if args.command == "migrate":
            return migrate(settings)
        if args.command == "serve":
            return serve(settings.with_(port=args.port or settings.port, host=args.host or settings.host))
        if args.command == "keys":
            return keys(settings, args)
        client = Client(args.api or settings.htbase_url or f"http://127.0.0.1:{settings.port}", settings.htbase_api_key)
        if args.command == "archive":
            archivers = [a.strip() for a in args.archivers.split(",")] if args.archivers else None
            return archive(client, args.url, archivers, args.wait, args.timeout)
        if args.command == "list":
            return list_tasks(client, args.limit)
        if args.command == "show":
            return show(client, args.id)
        if args.command == "get":
            return get(client, args.id, args.format, args.output)
        if args.command == "import":
            return import_file(client, args.file, args.recapture, args.wait)
        return cancel(client, args.id) if args.command == "cancel" else delete(client, args.id, args.item)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
