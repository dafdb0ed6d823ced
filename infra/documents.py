"""How ledger rows look to clients: the API's task document, also the Firestore replica's."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from htbase.messages import ArtifactStatus, derive_task_status
from infra.ledger import BatchSummary
from infra.models import Artifact, Summary, Task

API = "/api/v2"


def isoformat(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat(timespec="milliseconds") + "Z"


def task_status(tasks: Iterable[Task]) -> tuple[str, float, datetime | None]:
    """Status, progress and completion time of one task or a batch, from its artifacts."""
    artifacts = [a for t in tasks for a in t.artifacts]
    status, progress = derive_task_status([ArtifactStatus(a.status) for a in artifacts])
    finished = [a.finished_at for a in artifacts if a.finished_at]
    completed_at = max(finished) if progress == 1.0 and finished else None
    return status.value, progress, completed_at


def artifact_view(task_id: str, artifact: Artifact) -> dict[str, Any]:
    view: dict[str, Any] = {"status": artifact.status, "attempts": artifact.attempts}
    if artifact.error:
        view["error"] = artifact.error
    if artifact.status == "success":
        view["artifact"] = {
            "uri": artifact.uri, "size": artifact.size, "sha256": artifact.sha256,
            "content_type": artifact.content_type, "url": f"{API}/archives/{task_id}/{artifact.archiver}",
            "duration_ms": artifact.duration_ms,
        }
        if artifact.meta:
            view["metadata"] = {k: v for k, v in artifact.meta.items() if k != "extras"}
    return view


def task_view(task: Task, children: list[Task] | None = None) -> dict[str, Any]:
    members = children if task.kind == "batch" else [task]
    view = _task_head(task, *task_status(members or []))
    if task.kind == "batch":
        view["items"] = [task_view(child) for child in members]
    else:
        view["url"] = task.item.url
        view["item_id"] = task.item.item_id
        view["subtasks"] = {a.archiver: artifact_view(task.task_id, a) for a in task.artifacts}
        if task.summary_key:
            view["summary_url"] = f"{API}/summaries/{task.task_id}"
    return view


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
    view: dict[str, Any] = {"task_id": task_id, "status": summary.status, **summary.result,
                            "model": summary.result.get("model", summary.model),
                            "prompt_version": summary.prompt_version,
                            "created_at": isoformat(summary.created_at), "updated_at": isoformat(summary.updated_at)}
    if summary.error:
        view["error"] = summary.error
    return view
