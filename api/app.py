"""The public HTTP API (v2). Handlers parse, call one function, and map the result."""
from __future__ import annotations

import io
import logging
import zipfile
from typing import Any

from flask import Flask, Response, jsonify, redirect, request
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from htbase.logs import log, set_trace
from htbase.messages import ARCHIVERS, SummarizeRequest
from htbase.urls import InvalidURL, url_hash, validate_url
from infra.documents import API, summary_view, task_view
from infra.ledger import CreatedTask, ItemConflict, NewItem
from infra.models import Task
from infra.outbox import summarize_outgoing
from infra.runtime import Runtime
from infra.storage import ObjectNotFound

logger = logging.getLogger("htbase.api")
MAX_BATCH = 100


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _archivers(body: dict[str, Any], enabled: tuple[str, ...]) -> list[str]:
    archivers = body.get("archivers") or list(enabled)
    if not isinstance(archivers, list) or not all(isinstance(a, str) for a in archivers):
        raise ApiError(400, "bad_request", "'archivers' must be a list of archiver names")
    unknown = [a for a in archivers if a not in ARCHIVERS]
    if unknown:
        raise ApiError(400, "unknown_archiver", f"unknown archivers {unknown}; known: {list(ARCHIVERS)}")
    disabled = [a for a in archivers if a not in enabled]
    if disabled:
        raise ApiError(400, "archiver_disabled", f"archivers {disabled} are not enabled here")
    return list(dict.fromkeys(archivers))


def _item(entry: Any) -> NewItem:
    if not isinstance(entry, dict):
        raise ApiError(400, "bad_request", "each item must be an object with a 'url'")
    url, item_id = entry.get("url"), entry.get("item_id")
    if not isinstance(url, str):
        raise ApiError(400, "invalid_url", "'url' is required and must be a string")
    if item_id is not None and (not isinstance(item_id, str) or not 0 < len(item_id) <= 200):
        raise ApiError(400, "bad_request", "'item_id' must be a string of 1 to 200 characters")
    try:
        url = validate_url(url)
    except InvalidURL as exc:
        raise ApiError(400, "invalid_url", str(exc)) from None
    return NewItem(url=url, url_hash=url_hash(url), item_id=item_id)


def _webhook(body: dict[str, Any]) -> str | None:
    """Kept for the webhook deliveries to come; refused now if it could never be called."""
    webhook = body.get("webhook_url")
    if webhook is None:
        return None
    try:
        return validate_url(webhook) if isinstance(webhook, str) else validate_url("")
    except InvalidURL as exc:
        raise ApiError(400, "invalid_webhook_url", f"'webhook_url': {exc}") from None


def _options(body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "bad_request", "'options' must be an object")
    timeout = options.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or not 0 < timeout <= 600):
        raise ApiError(400, "bad_request", "'options.timeout' must be a number of seconds in (0, 600]")
    return options


def create_app(runtime: Runtime) -> Flask:
    app = Flask("htbase.api")
    app.json.sort_keys = False
    settings, ledger = runtime.settings, runtime.ledger

    def accept(items: list[NewItem], body: dict[str, Any], batch: bool) -> CreatedTask:
        try:
            created = ledger.create_task(items, _archivers(body, settings.archivers), options=_options(body),
                                         request_id=request.headers.get("X-Request-Id", "")[:64],
                                         webhook_url=_webhook(body), batch=batch)
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
        task = ledger.task(task_id)
        if task is None:
            raise ApiError(404, "not_found", f"no task {task_id}")
        return task

    @app.get(f"{API}/tasks/<task_id>")
    def get_task(task_id: str) -> Response:
        task = find_task(task_id)
        return jsonify(task_view(task, ledger.children(task_id) if task.kind == "batch" else None))

    @app.get(f"{API}/tasks")
    def list_tasks() -> Response:
        try:
            limit = min(max(int(request.args.get("limit", 20)), 1), 100)
            offset = max(int(request.args.get("offset", 0)), 0)
        except ValueError:
            raise ApiError(400, "bad_request", "'limit' and 'offset' must be integers") from None
        tasks, total = ledger.list_tasks(limit=limit, offset=offset)
        views = [task_view(t, ledger.children(t.task_id) if t.kind == "batch" else None) for t in tasks]
        following = offset + limit
        return jsonify({"tasks": views, "total": total, "limit": limit, "offset": offset,
                        "next": f"{API}/tasks?limit={limit}&offset={following}" if following < total else None})

    def task_for_archive(archive_id: str) -> Task:
        """An archive id is a task id or a client's item id (its newest task)."""
        task = ledger.task(archive_id) or ledger.latest_task_for_item(archive_id)
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
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive_zip:
            for key in keys:
                archive_zip.writestr(key.split("/", 1)[1], runtime.store.get(key))
        return Response(buffer.getvalue(), mimetype="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{task.task_id}.zip"'})

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
        signed = runtime.store.signed_url(artifact.storage_key, 900)
        if signed:
            return redirect(signed, 302)
        extension = artifact.storage_key.rsplit(".", 1)[-1]
        return Response(runtime.store.get(artifact.storage_key), mimetype=artifact.content_type, headers={
            "Content-Disposition": f'inline; filename="{task.task_id}-{archiver}.{extension}"',
            "X-Content-SHA256": artifact.sha256 or ""})

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
        body = request.get_json(silent=True) or {}
        force = body.get("force", False) if isinstance(body, dict) else False
        if not isinstance(force, bool):
            raise ApiError(400, "bad_request", "'force' must be a boolean")
        task = task_for_archive(archive_id)
        readable_article(task)
        summary_request = SummarizeRequest(task.task_id, force, request.headers.get("X-Request-Id", "")[:64])
        runtime.relay.send(runtime.outbox.add(summarize_outgoing(summary_request)))
        url = f"{API}/summaries/{task.task_id}"
        response = jsonify({"task_id": task.task_id, "status": "pending", "summary_url": url, "force": force})
        response.status_code, response.headers["Location"] = 202, url
        return response

    @app.get(f"{API}/summaries/<archive_id>")
    def get_summary(archive_id: str) -> Response:
        task = task_for_archive(archive_id)
        summary = runtime.summaries.get(task.summary_key) if task.summary_key else None
        if summary is None:
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
