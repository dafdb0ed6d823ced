"""Summaries: ask for one (again), and read it."""

from __future__ import annotations

from flask import Response, jsonify

from api.auth import submission
from api.context import request_id, runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import ArchivePath, ErrorBody, SummarizeBody, SummaryAccepted, SummaryDocument
from api.tasks import task_for_archive
from htbase.messages import SummarizeRequest
from infra.documents import API, summary_view
from infra.models import Artifact, Task
from infra.outbox import summarize_outgoing

bp = blueprint("summaries", "Summaries of captured articles")


def _readable_article(task: Task) -> Artifact:
    article = task.artifact("readability")
    if article is None:
        raise ApiError(409, "no_article", f"task {task.task_id} has no readability capture to summarize")
    if article.status in ("pending", "processing"):
        raise ApiError(409, "not_ready", f"the readable article is still {article.status}")
    if article.status != "success":
        raise ApiError(409, "no_article", f"no readable article: {article.error}")
    return article


@bp.post("/summarize/<archive_id>", responses={202: SummaryAccepted, 404: ErrorBody, 409: ErrorBody, 413: ErrorBody})
@submission
def summarize(path: ArchivePath, body: SummarizeBody) -> Response:
    """(Re)request the summary of a task's readable article; `force` makes a new one. The body may be empty."""
    task = task_for_archive(path.archive_id)
    _readable_article(task)
    summary_request = SummarizeRequest(task.task_id, body.force, request_id())
    runtime().relay.send(runtime().outbox.add(summarize_outgoing(summary_request)))
    url = f"{API}/summaries/{task.task_id}"
    response = jsonify({"task_id": task.task_id, "status": "pending", "summary_url": url, "force": body.force})
    response.status_code, response.headers["Location"] = 202, url
    return response


@bp.get("/summaries/<archive_id>", responses={200: SummaryDocument, 404: ErrorBody, 409: ErrorBody})
def get_summary(path: ArchivePath) -> Response:
    """The summary: lede, summary, key points, tags, and how it was made; 409 while it is being made."""
    task = task_for_archive(path.archive_id)
    summary = runtime().summaries.get(task.summary_key) if task.summary_key else None
    if summary is None or summary.status == "pending":
        _readable_article(task)
        raise ApiError(409, "not_ready", "the summary is being made")
    return jsonify(summary_view(task.task_id, summary))
