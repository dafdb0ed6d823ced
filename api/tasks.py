"""Tasks: one task's document, the history of all of them, and cancelling or deleting one."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Response, jsonify

from api.context import runtime
from api.errors import ApiError
from api.openapi import Responses, blueprint
from api.schemas import ErrorBody, TaskDocument, TaskList, TaskListQuery, TaskPath
from htbase.messages import TaskStatus
from infra.documents import API, batch_summary_view, task_view
from infra.ledger import CancelOutcome
from infra.models import Task

bp = blueprint("tasks", "Follow tasks")
DELETED: Responses = {204: {"description": "deleted; a second DELETE is 404"}, 404: ErrorBody}


def utc(moment: datetime | None) -> datetime | None:
    """A client's time as the ledger keeps times: naive UTC (one without a zone is UTC already)."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def deleted(changed: list[str] | None, what: str) -> Response:
    """Once the rows are gone, their files and Firestore documents go too (``Runtime.forget``)."""
    if changed is None:
        raise ApiError(404, "not_found", f"no {what}")
    runtime().forget(changed)
    return Response(status=204)


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
    """The history, newest first; a batch is listed with `items_count` and `items_url` instead of its items.
    `item_id`: that item's snapshots; `status` as the documents show it; `since`: created at or after."""
    ledger, limit, offset = runtime().ledger, min(max(query.limit, 1), 100), query.offset
    tasks, total = ledger.list_tasks(
        limit=limit,
        offset=offset,
        item_id=query.item_id,
        since=utc(query.since),
        status=TaskStatus(query.status) if query.status else None,
    )
    # A batch is listed with its children counted, not rendered: a page stays small.
    batches = ledger.batch_summaries([t.task_id for t in tasks if t.kind == "batch"])
    views = [batch_summary_view(t, batches[t.task_id]) if t.kind == "batch" else task_view(t) for t in tasks]
    following = offset + limit
    filters = {"status": query.status, "item_id": query.item_id, "since": query.since and query.since.isoformat()}
    page = urlencode({"limit": limit, "offset": following, **{k: v for k, v in filters.items() if v}})
    return jsonify(
        {
            "tasks": views,
            "total": total,
            "limit": limit,
            "offset": offset,
            "next": f"{API}/tasks?{page}" if following < total else None,
        }
    )


@bp.post("/tasks/<task_id>/cancel", responses={200: TaskDocument, 404: ErrorBody, 409: ErrorBody})
def cancel_task(path: TaskPath) -> Response:
    """Cancel a task (every task of a batch): captures not started never run; one that is running finishes
    and is kept (it is not retried). The task ends `cancelled`, or `partial` if some formats were stored."""
    process = runtime()
    outcome = process.ledger.cancel(path.task_id)
    if outcome is CancelOutcome.MISSING:
        raise ApiError(404, "not_found", f"no task {path.task_id}")
    if outcome is CancelOutcome.FINISHED:
        raise ApiError(409, "finished", f"task {path.task_id} has ended already")
    process.replica.sync(path.task_id)
    task = find_task(path.task_id)
    return jsonify(task_view(task, process.ledger.children(task.task_id) if task.kind == "batch" else None))


@bp.delete("/tasks/<task_id>", responses=DELETED)
def delete_task(path: TaskPath) -> Response:
    """Delete a task (a batch with its tasks): its rows, files and documents. An item left without
    snapshots (and without a schedule) goes too."""
    process = runtime()
    task = process.ledger.task(path.task_id)
    members = process.ledger.children(path.task_id) if task is not None and task.kind == "batch" else [task]
    answer = deleted(process.deletions.delete_task(path.task_id), f"task {path.task_id}")
    for item_id in {member.item_id for member in members if member is not None and member.item_id}:
        process.search.refresh(item_id)  # found by its next newest snapshot now, if it has one
    return answer
