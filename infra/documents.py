"""How ledger rows look to clients: the API's task document, also the Firestore replica's."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from htbase.messages import ArtifactStatus, derive_task_status
from infra.catalog import Entry
from infra.ledger import BatchSummary
from infra.models import Artifact, Schedule, Summary, Task, WebhookDelivery

API = "/api/v2"
# Where a snapshot's title is read from, the best first.
TITLE_SOURCES = ("readability", "singlefile", "monolith", "pdf", "screenshot")


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def task_status(tasks: Iterable[Task]) -> tuple[str, float, datetime | None]:
    """Status, progress and completion time of one task or a batch, from its artifacts."""
    artifacts = [a for t in tasks for a in t.artifacts]
    status, progress = derive_task_status([ArtifactStatus(a.status) for a in artifacts])
    finished = [a.finished_at for a in artifacts if a.finished_at]
    completed_at = max(finished) if progress == 1.0 and finished else None
    return status.value, progress, completed_at


def title(task: Task) -> str | None:
    """The page's title, as a capture of the task found it."""
    for archiver in TITLE_SOURCES:
        artifact = task.artifact(archiver)
        if artifact is not None and artifact.status == "success" and (artifact.meta or {}).get("title"):
            return artifact.meta["title"]
    return None


def artifact_view(task_id: str, artifact: Artifact) -> dict[str, Any]:
    view: dict[str, Any] = {"status": artifact.status, "attempts": artifact.attempts}
    if artifact.error:
        view["error"] = artifact.error
    if artifact.status == "pending" and artifact.next_attempt_at:
        view["next_attempt_at"] = isoformat(artifact.next_attempt_at)  # when the broker is due to try again
    if artifact.status == "success":
        view["artifact"] = {
            "size": artifact.size,
            "sha256": artifact.sha256,
            "content_type": artifact.content_type,
            "url": f"{API}/archives/{task_id}/{artifact.archiver}",
            "duration_ms": artifact.duration_ms,
        }
        if artifact.meta:
            view["metadata"] = {k: v for k, v in artifact.meta.items() if k != "extras"}
    return view


def task_view(task: Task, children: list[Task] | None = None) -> dict[str, Any]:
    members = (children or []) if task.kind == "batch" else [task]
    view = _task_head(task, *task_status(members))
    if task.kind == "batch":
        view["items"] = [task_view(child) for child in members]
    else:
        item = task.item
        assert item is not None  # a single task has its item
        view["url"] = item.url
        view["item_id"] = item.item_id
        view["title"] = title(task)
        view["subtasks"] = {a.archiver: artifact_view(task.task_id, a) for a in task.artifacts}
        if task.summary_key:
            view["summary_url"] = f"{API}/summaries/{task.task_id}"
    if task.webhook_url:
        view["webhook"] = webhook_view(task.webhook)
    return view


def webhook_view(delivery: WebhookDelivery | None) -> dict[str, Any]:
    """How the task's webhook went; ``waiting`` until the task ends."""
    if delivery is None:
        return {"status": "waiting", "attempts": 0}
    view: dict[str, Any] = {
        "status": delivery.status,
        "attempts": delivery.attempts,
        "id": delivery.id,
        "last_status": delivery.last_status,
    }
    if delivery.last_error:
        view["last_error"] = delivery.last_error
    if delivery.status == "pending":
        view["next_attempt_at"] = isoformat(delivery.next_attempt_at)
    view["delivered_at"] = isoformat(delivery.delivered_at)
    return view


def snapshot_view(task: Task) -> dict[str, Any]:
    """One capture of an item: when, how it went, and the formats it holds."""
    status, _, completed_at = task_status([task])
    return {
        "task_id": task.task_id,
        "created_at": isoformat(task.created_at),
        "status": status,
        "completed_at": isoformat(completed_at),
        "formats": [a.archiver for a in task.artifacts if a.status == "success"],
        "status_url": f"{API}/tasks/{task.task_id}",
    }


def item_view(entry: Entry, snapshots: list[Task], schedule: Schedule | None) -> dict[str, Any]:
    """An item with every snapshot, the newest first, its title the newest any snapshot found, and its
    re-capture schedule."""
    return {
        **item_summary_view(entry),
        "title": next(filter(None, map(title, snapshots)), None),
        "snapshots": [snapshot_view(task) for task in snapshots],
        "schedule": schedule_view(schedule) if schedule else None,
    }


def item_summary_view(entry: Entry) -> dict[str, Any]:
    """An item in a list: what it is, and its newest snapshot."""
    return {
        "item_id": entry.item_id,
        "url": entry.url,
        "title": entry.title or None,
        "tags": entry.tags,
        "created_at": isoformat(entry.created_at),
        "item_url": f"{API}/items/{entry.item_id}",
        "snapshots_count": entry.snapshots,
        "latest": snapshot_view(entry.snapshot),
    }


def schedule_view(schedule: Schedule) -> dict[str, Any]:
    return {
        "item_id": schedule.item_id,
        "every_s": schedule.every_s,
        "archivers": schedule.archivers,
        "next_run_at": isoformat(schedule.next_run_at),
    }


def batch_summary_view(task: Task, summary: BatchSummary) -> dict[str, Any]:
    """A batch in a list of tasks: its children counted, and a link to the document that shows them."""
    status, progress = derive_task_status(summary.statuses)
    view = _task_head(task, status.value, progress, summary.finished_at if progress == 1.0 else None)
    view["items_count"], view["items_url"] = summary.items, view["status_url"]
    return view


def _task_head(task: Task, status: str, progress: float, completed_at: datetime | None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "task_id": task.task_id,
        "kind": task.kind,
        "status": status,
        "progress": round(progress, 4),
        "created_at": isoformat(task.created_at),
        "completed_at": isoformat(completed_at),
        "status_url": f"{API}/tasks/{task.task_id}",
    }
    if task.request_id:
        view["request_id"] = task.request_id
    return view


def summary_view(task_id: str, summary: Summary) -> dict[str, Any]:
    view: dict[str, Any] = {
        "task_id": task_id,
        "status": summary.status,
        **summary.result,
        "model": summary.result.get("model", summary.model),
        "prompt_version": summary.prompt_version,
        "created_at": isoformat(summary.created_at),
        "updated_at": isoformat(summary.updated_at),
    }
    if summary.error:
        view["error"] = summary.error
    return view
