"""Tasks: one task's document, and the history of all of them."""
from __future__ import annotations

from flask import Response, jsonify

from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import ErrorBody, TaskDocument, TaskList, TaskListQuery, TaskPath
from infra.documents import API, batch_summary_view, task_view
from infra.models import Task

bp = blueprint("tasks", "Follow tasks")


def find_task(task_id: str) -> Task:
    task = runtime().ledger.task(task_id)
    if task is None:
        raise ApiError(404, "not_found", f"no task {task_id}")
    return task


def task_for_archive(archive_id: str) -> Task:
    """An archive id is a task id or a client's item id (its newest task)."""
    ledger = runtime().ledger
    task = ledger.task(archive_id) or ledger.latest_task_for_item(archive_id)
    if task is None or task.kind == "batch":
        raise ApiError(404, "not_found", f"no archive {archive_id}")
    return task


@bp.get("/tasks/<task_id>", responses={200: TaskDocument, 404: ErrorBody})
def get_task(path: TaskPath) -> Response:
    """A task's status and each format's; a batch shows its tasks as `items`."""
    task = find_task(path.task_id)
    children = runtime().ledger.children(task.task_id) if task.kind == "batch" else None
    return jsonify(task_view(task, children))


@bp.get("/tasks", responses={200: TaskList})
def list_tasks(query: TaskListQuery) -> Response:
    """The history, newest first; a batch is listed with `items_count` and `items_url` instead of its items."""
    ledger, limit, offset = runtime().ledger, min(max(query.limit, 1), 100), query.offset
    tasks, total = ledger.list_tasks(limit=limit, offset=offset)
    # A batch is listed with its children counted, not rendered: a page stays small.
    batches = ledger.batch_summaries([t.task_id for t in tasks if t.kind == "batch"])
    views = [batch_summary_view(t, batches[t.task_id]) if t.kind == "batch" else task_view(t) for t in tasks]
    following = offset + limit
    return jsonify({"tasks": views, "total": total, "limit": limit, "offset": offset,
                    "next": f"{API}/tasks?limit={limit}&offset={following}" if following < total else None})
