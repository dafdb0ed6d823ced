"""The public HTTP API (v2). Handlers parse, call one function, and map the result.

Everything a client sends is bounded and checked before it reaches the
ledger, so bad input answers 400 (413 for a body too large), never 500 or
503. Archived files are streamed, and served so that a page written by a
stranger can never run script with the API's origin (``archive_headers``).
"""
from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, redirect, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.http import parse_options_header

from htbase.logs import log, set_trace
from htbase.messages import ARCHIVERS, SummarizeRequest
from htbase.urls import InvalidURL, url_hash, validate_url
from infra.documents import API, batch_summary_view, summary_view, task_view
from infra.ledger import CreatedTask, ItemConflict, NewItem
from infra.models import Task
from infra.outbox import summarize_outgoing
from infra.runtime import Runtime
from infra.storage import FileStore, ObjectNotFound

logger = logging.getLogger("htbase.api")
MAX_BATCH = 100
# The largest honest body, a full batch of the longest URLs and item ids, is about 250 KB.
MAX_BODY_BYTES = 1024 * 1024
MAX_OFFSET = 2**31 - 1  # beyond it a database refuses the number instead of finding nothing
# Ids travel in URL paths (/archives/{item_id}/all): letters, digits and marks that need no
# escaping there, a letter or digit first (so "." and ".." are never ids). Task ids are UUIDs.
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~:@+=-]{0,199}")
NOT_IN_REQUEST_IDS = re.compile(r"[^\x21-\x7e]")  # all but printable ASCII
CHUNK_BYTES = 64 * 1024

# Archived pages are written by strangers. Under this policy a document gets an opaque
# origin and runs no script (a sandbox without allow-same-origin or allow-scripts), and
# loads nothing from the network: an archive shows what was captured (inline styles,
# data: images and fonts), never live resources that would tell a page's owner who
# reads it.
ARCHIVE_POLICY = ("sandbox; default-src 'none'; img-src data: blob:; style-src 'unsafe-inline' data:; "
                  "font-src data:; media-src data: blob:")
INLINE_TYPES = frozenset({"text/html", "application/pdf", "image/png"})
# Shown without a document that could run script on the API's origin, these need no policy
# (Chromium refuses to show a PDF under a sandbox; a PDF's scripts run in the viewer), so
# they may also come straight from the bucket.
SCRIPTLESS_TYPES = frozenset({"application/pdf", "image/png"})


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; ``optional``: an empty body is an empty object."""
    data = request.get_data()  # Flask answers 413 to a Content-Length over MAX_BODY_BYTES...
    if len(data) >= MAX_BODY_BYTES:  # ...but cuts a chunked body there: one that reached it is too large
        raise RequestEntityTooLarge()
    if optional and not data.strip():
        return {}
    if not request.is_json:
        raise ApiError(400, "bad_request", "the body must be JSON (Content-Type: application/json)")
    try:
        body = json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to be an honest request
        raise ApiError(400, "bad_request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _shown(values: list[Any]) -> str:
    """A few of a client's values, for an error message that must stay small."""
    return ", ".join(repr(v)[:40] for v in values[:5]) + (", …" if len(values) > 5 else "")


def _archivers(body: dict[str, Any], enabled: tuple[str, ...]) -> list[str]:
    """Only an absent (or null) ``archivers`` means every enabled one; an empty list is a mistake."""
    archivers = body.get("archivers")
    if archivers is None:
        return list(enabled)
    if not isinstance(archivers, list) or not archivers or not all(isinstance(a, str) for a in archivers):
        raise ApiError(400, "bad_request", "'archivers' must be a non-empty list of archiver names")
    unknown = [a for a in archivers if a not in ARCHIVERS]
    if unknown:
        raise ApiError(400, "unknown_archiver", f"unknown archivers {_shown(unknown)}; known: {list(ARCHIVERS)}")
    disabled = [a for a in archivers if a not in enabled]
    if disabled:
        raise ApiError(400, "archiver_disabled", f"archivers {_shown(disabled)} are not enabled here")
    return list(dict.fromkeys(archivers))


def _url(value: Any, name: str, code: str) -> str:
    try:
        if not isinstance(value, str):
            raise InvalidURL("must be a string")
        value.encode("utf-8")  # JSON can carry a lone surrogate, which no database stores
        return validate_url(value)
    except UnicodeEncodeError:
        raise ApiError(400, code, f"'{name}' is not valid Unicode") from None
    except InvalidURL as exc:
        raise ApiError(400, code, f"'{name}': {exc}") from None


def _item(entry: Any) -> NewItem:
    if not isinstance(entry, dict):
        raise ApiError(400, "bad_request", "each item must be an object with a 'url'")
    url, item_id = _url(entry.get("url"), "url", "invalid_url"), entry.get("item_id")
    if item_id is not None and not (isinstance(item_id, str) and ID.fullmatch(item_id)):
        raise ApiError(400, "bad_request", "'item_id' must be 1 to 200 letters, digits or ._~:@+=- "
                                           "(a letter or digit first)")
    return NewItem(url=url, url_hash=url_hash(url), item_id=item_id)


def _webhook(body: dict[str, Any]) -> str | None:
    """Kept for the webhook deliveries to come; refused now if it could never be called."""
    webhook = body.get("webhook_url")
    return None if webhook is None else _url(webhook, "webhook_url", "invalid_webhook_url")


def _options(body: dict[str, Any], max_timeout_s: float) -> dict[str, Any]:
    """Only known options, each checked: they travel in every message of the task."""
    options = body.get("options")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ApiError(400, "bad_request", "'options' must be an object")
    unknown = [key for key in options if key != "timeout"]
    if unknown:
        raise ApiError(400, "bad_request", f"unknown options {_shown(unknown)}; known: ['timeout']")
    timeout = options.get("timeout")
    # bool is an int to Python, not a number of seconds to anyone.
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout <= max_timeout_s):
        raise ApiError(400, "bad_request", f"'options.timeout' must be a number of seconds in (0, {max_timeout_s:g}]")
    return options


def _request_id() -> str:
    """The caller's X-Request-Id, kept to what any database stores and any log shows."""
    return NOT_IN_REQUEST_IDS.sub("", request.headers.get("X-Request-Id", ""))[:64]


def _id(value: str) -> str:
    """A task id or item id from a path; one that could name nothing is a client's mistake."""
    if not ID.fullmatch(value):
        raise ApiError(400, "bad_request", "not a task id or item id")
    return value


def _page() -> tuple[int, int]:
    try:
        limit, offset = int(request.args.get("limit", 20)), int(request.args.get("offset", 0))
    except ValueError:
        raise ApiError(400, "bad_request", "'limit' and 'offset' must be integers") from None
    if not 0 <= offset <= MAX_OFFSET:
        raise ApiError(400, "bad_request", f"'offset' must be within 0..{MAX_OFFSET}")
    return min(max(limit, 1), 100), offset


def archive_headers(content_type: str | None, filename: str) -> dict[str, str]:
    """How stored bytes are served: the sandbox policy on all that could hold script, inline only for
    what a browser shows safely, a filename that needs no quoting, and the charset said once."""
    mimetype, params = parse_options_header(content_type or "application/octet-stream")
    headers = {"Content-Type": f"{mimetype}; charset={params['charset']}" if "charset" in params else mimetype,
               "Content-Disposition": f'{"inline" if mimetype in INLINE_TYPES else "attachment"}; '
                                      f'filename="{re.sub(r"[^A-Za-z0-9._-]", "_", filename)}"'}
    if mimetype not in SCRIPTLESS_TYPES:
        headers["Content-Security-Policy"] = ARCHIVE_POLICY
    return headers


def _chunks(source: io.BufferedIOBase) -> Iterator[bytes]:
    with source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


class _Spool(io.RawIOBase):
    """An unseekable file: the zip writer appends to it, the response takes what is there."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # any buffer, as io.RawIOBase takes
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _zip_stream(store: FileStore, entries: list[tuple[str, str]]) -> Iterator[bytes]:
    """A zip of the stored objects (name, key), made as it is sent: a piece of one file at a time in memory."""
    spool = _Spool()
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, key in entries:
            with store.open(key) as source, archive.open(name, "w") as target:
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    if data := spool.take():
                        yield data
    yield spool.take()


def create_app(runtime: Runtime) -> Flask:
    app = Flask("htbase.api")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    settings, ledger = runtime.settings, runtime.ledger

    def accept(items: list[NewItem], body: dict[str, Any], batch: bool) -> CreatedTask:
        try:
            created = ledger.create_task(items, _archivers(body, settings.archivers),
                                         options=_options(body, settings.max_capture_timeout_s),
                                         request_id=_request_id(), webhook_url=_webhook(body), batch=batch)
        except ItemConflict as exc:
            raise ApiError(409, "item_conflict", str(exc)) from None
        # Publish after commit; if the broker is down the outbox keeps it and the relay retries.
        runtime.relay.send(created.outbox)
        log(logger, logging.INFO, "task accepted", task_id=created.task_id, items=len(items))
        return created

    def accepted(created: CreatedTask) -> Response:
        url = f"{API}/tasks/{created.task_id}"
        body: dict[str, Any] = {"task_id": created.task_id, "status": "pending", "status_url": url}
        if created.kind == "batch":
            body["tasks"] = created.children
        else:
            body["item_id"] = created.children[0]["item_id"]
        response = jsonify(body)
        response.status_code, response.headers["Location"] = 202, url
        return response

    @app.before_request
    def trace() -> None:
        set_trace(request.headers.get("X-Cloud-Trace-Context", ""))

    @app.after_request
    def no_sniffing(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.post(f"{API}/archive")
    def archive() -> Response:
        body = _body()
        return accepted(accept([_item(body)], body, batch=False))

    @app.post(f"{API}/archive/batch")
    def archive_batch() -> Response:
        body = _body()
        entries = body.get("items")
        if not isinstance(entries, list) or not entries:
            raise ApiError(400, "bad_request", "'items' must be a non-empty list of {url, item_id?}")
        if len(entries) > MAX_BATCH:
            raise ApiError(400, "batch_too_large", f"a batch holds at most {MAX_BATCH} items, got {len(entries)}")
        return accepted(accept([_item(entry) for entry in entries], body, batch=True))

    def find_task(task_id: str) -> Task:
        task = ledger.task(_id(task_id))
        if task is None:
            raise ApiError(404, "not_found", f"no task {task_id}")
        return task

    @app.get(f"{API}/tasks/<task_id>")
    def get_task(task_id: str) -> Response:
        task = find_task(task_id)
        return jsonify(task_view(task, ledger.children(task_id) if task.kind == "batch" else None))

    @app.get(f"{API}/tasks")
    def list_tasks() -> Response:
        limit, offset = _page()
        tasks, total = ledger.list_tasks(limit=limit, offset=offset)
        # A batch is listed with its children counted, not rendered: a page stays small.
        batches = ledger.batch_summaries([t.task_id for t in tasks if t.kind == "batch"])
        views = [batch_summary_view(t, batches[t.task_id]) if t.kind == "batch" else task_view(t) for t in tasks]
        following = offset + limit
        return jsonify({"tasks": views, "total": total, "limit": limit, "offset": offset,
                        "next": f"{API}/tasks?limit={limit}&offset={following}" if following < total else None})

    def task_for_archive(archive_id: str) -> Task:
        """An archive id is a task id or a client's item id (its newest task)."""
        task = ledger.task(_id(archive_id)) or ledger.latest_task_for_item(archive_id)
        if task is None or task.kind == "batch":
            raise ApiError(404, "not_found", f"no archive {archive_id}")
        return task

    @app.get(f"{API}/archives/<archive_id>/all")
    def download_all(archive_id: str) -> Response:
        task = task_for_archive(archive_id)
        keys = [key for a in task.artifacts if a.status == "success"
                for key in [a.storage_key, *(a.meta.get("extras") or {}).values()]]
        if not keys:
            raise ApiError(404, "not_found", f"task {task.task_id} has no finished artifacts yet")
        entries = [(key.split("/", 1)[1], key) for key in keys]
        return Response(_zip_stream(runtime.store, entries),
                        headers=archive_headers("application/zip", f"{task.task_id}.zip"))

    @app.get(f"{API}/archives/<archive_id>/<archiver>")
    def download(archive_id: str, archiver: str) -> Response:
        if archiver not in ARCHIVERS:
            raise ApiError(404, "not_found", f"unknown archiver {archiver!r}")
        task = task_for_archive(archive_id)
        artifact = task.artifact(archiver)
        if artifact is None:
            raise ApiError(404, "not_found", f"task {task.task_id} did not ask for {archiver}")
        if artifact.status in ("pending", "processing"):
            raise ApiError(409, "not_ready", f"{archiver} is {artifact.status}")
        if artifact.status != "success":
            raise ApiError(404, "capture_failed", f"{archiver} {artifact.status}: {artifact.error}")
        extension = artifact.storage_key.rsplit(".", 1)[-1]
        headers = archive_headers(artifact.content_type, f"{task.task_id}-{archiver}.{extension}")
        # A document that needs the sandbox is always served from here, under it; other files
        # may come straight from the bucket.
        signed = None if "Content-Security-Policy" in headers else runtime.store.signed_url(artifact.storage_key, 900)
        if signed:
            return redirect(signed, 302)
        headers["X-Content-SHA256"] = artifact.sha256 or ""
        # No Content-Length: sent chunked, a response may exceed Cloud Run's 32 MiB cap on a sized one.
        return Response(_chunks(runtime.store.open(artifact.storage_key)), headers=headers)

    def readable_article(task: Task):
        article = task.artifact("readability")
        if article is None:
            raise ApiError(409, "no_article", f"task {task.task_id} has no readability capture to summarize")
        if article.status in ("pending", "processing"):
            raise ApiError(409, "not_ready", f"the readable article is still {article.status}")
        if article.status != "success":
            raise ApiError(409, "no_article", f"no readable article: {article.error}")
        return article

    @app.post(f"{API}/summarize/<archive_id>")
    def summarize(archive_id: str) -> Response:
        force = _body(optional=True).get("force", False)
        if not isinstance(force, bool):
            raise ApiError(400, "bad_request", "'force' must be a boolean")
        task = task_for_archive(archive_id)
        readable_article(task)
        summary_request = SummarizeRequest(task.task_id, force, _request_id())
        runtime.relay.send(runtime.outbox.add(summarize_outgoing(summary_request)))
        url = f"{API}/summaries/{task.task_id}"
        response = jsonify({"task_id": task.task_id, "status": "pending", "summary_url": url, "force": force})
        response.status_code, response.headers["Location"] = 202, url
        return response

    @app.get(f"{API}/summaries/<archive_id>")
    def get_summary(archive_id: str) -> Response:
        task = task_for_archive(archive_id)
        summary = runtime.summaries.get(task.summary_key) if task.summary_key else None
        if summary is None or summary.status == "pending":
            readable_article(task)
            raise ApiError(409, "not_ready", "the summary is being made")
        return jsonify(summary_view(task.task_id, summary))

    @app.get(f"{API}/health")
    @app.get("/healthz")
    def health() -> Response:
        try:
            ledger.ping()
        except Exception as exc:
            return _error(503, "unhealthy", f"database unreachable: {type(exc).__name__}")
        return jsonify({"status": "ok", "role": settings.service_role, "archivers": list(settings.archivers)})

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return _error(exc.status, exc.code, exc.message)

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    def database_down(exc: Exception) -> Response:
        logger.error("database unavailable: %s", exc)
        return _error(503, "unavailable", "the database is unavailable; nothing was written, try again")

    @app.errorhandler(ObjectNotFound)
    def file_missing(exc: ObjectNotFound) -> Response:
        logger.error("artifact file missing from storage: %s", exc)
        return _error(404, "not_found", "the artifact file is missing from storage")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _error(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def crashed(exc: Exception) -> Response:
        logger.exception("unhandled error")
        return _error(500, "internal", "internal error; the request was logged")

    return app
