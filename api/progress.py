"""Following a task as it goes: server-sent events of its document, and waiting for its end.

Both read the ledger every ``POLL_S`` and compare the task document (as ``GET /tasks/{id}`` shows
it) with the last one: no broker, no state in the process, so any API process can answer any
client, under gunicorn's threads as in the embedded server.

**Events.** Every connection starts with the current document, then sends one event per change,
and ends with the terminal one (``event: task.completed``), or with ``event: task.deleted`` if the
task goes. Each event's ``id`` is a hash of its document. The server does not read
``Last-Event-ID``: a reconnect, like any connection, is sent the current state first, so it never
misses the end, and the client can tell by the id whether it already had it. A stream still open
``STREAM_S`` after it began, the task not ended, is closed (a request may not run forever);
``EventSource`` and ``htbase archive --wait`` reconnect by themselves.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from flask import Response

from api.context import runtime
from api.openapi import Responses, blueprint
from api.schemas import ErrorBody, TaskPath
from api.tasks import find_task
from infra.documents import task_view
from infra.runtime import Runtime

bp = blueprint("progress", "Follow a task as it goes")
ENDED = ("success", "partial", "failed", "cancelled")  # a task's terminal statuses
POLL_S = 0.5
STREAM_S = 120.0
KEEPALIVE_S = 15.0  # a comment line, so that proxies keep an idle stream open
EVENTS: Responses = {
    200: {
        "description": "`text/event-stream`: `event: task` per change of the task document (`data`), "
        "`event: task.completed` for the last (`event: task.deleted` if the task goes); `id` is the document's "
        f"hash. Closed after {STREAM_S:.0f} s without the end: reconnect; every connection starts with the current "
        "document",
        # Before OpenAPI 3.2's itemSchema, an event stream's schema is that of each event.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"enum": ["task", "task.completed", "task.deleted"]},
                        "id": {"type": "string", "description": "a hash of the document"},
                        "data": {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"$ref": "#/components/schemas/TaskDocument"},
                            "description": "the task document; `{}` for `task.deleted`",
                        },
                    },
                }
            }
        },
    },
    404: ErrorBody,
}


def document(runtime: Runtime, task_id: str) -> dict[str, Any] | None:
    """The task document as GET /tasks/{id} shows it; None once the task is gone."""
    task = runtime.ledger.task(task_id)
    if task is None:
        return None
    return task_view(task, runtime.ledger.children(task_id) if task.kind == "batch" else None)


def polls(runtime: Runtime, task_id: str, seconds: float) -> Iterator[dict[str, Any] | None]:
    """The task document at each poll, until it has ended, is gone (None) or ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while True:
        current = document(runtime, task_id)
        yield current
        if current is None or current["status"] in ENDED or time.monotonic() >= deadline:
            return
        time.sleep(POLL_S)


def wait_for_end(runtime: Runtime, task_id: str, seconds: float) -> dict[str, Any]:
    """The task's document once it has ended, or as it stands after ``seconds``."""
    latest: dict[str, Any] = {}
    for current in polls(runtime, task_id, seconds):
        latest = current or latest
    return latest


def _event(current: dict[str, Any] | None) -> str:
    if current is None:
        return "event: task.deleted\ndata: {}\n\n"
    data = json.dumps(current, separators=(",", ":"))
    name = "task.completed" if current["status"] in ENDED else "task"
    return f"id: {hashlib.sha256(data.encode()).hexdigest()[:32]}\nevent: {name}\ndata: {data}\n\n"


@bp.get("/tasks/<task_id>/events", responses=EVENTS)
def task_events(path: TaskPath) -> Response:
    """Server-sent events: the task document now and at each change, ending with the terminal one."""
    find_task(path.task_id)
    process, task_id = runtime(), path.task_id  # the stream outlives the request's context

    def stream() -> Iterator[str]:
        yield f"retry: {int(POLL_S * 4000)}\n\n"
        sent, quiet_since = None, time.monotonic()
        for current in polls(process, task_id, STREAM_S):
            if current != sent or current is None:
                yield _event(current)
                sent, quiet_since = current, time.monotonic()
            elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()

    return Response(
        stream(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
