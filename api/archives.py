"""Downloads: each stored file, or a zip of them all, served so that a stranger's page runs no script here.

Archived pages are written by strangers. Every document that could hold script is served by
the API under ``ARCHIVE_POLICY``; what a browser shows without script (PDF, PNG) may come
straight from the bucket as a signed URL. Files are streamed, never held whole in memory.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime

from flask import Response, redirect
from werkzeug.http import parse_options_header
from werkzeug.wrappers import Response as BaseResponse  # a redirect is one, not a Flask Response

from api.context import runtime
from api.errors import ApiError
from api.openapi import Responses, blueprint
from api.schemas import ArchiveFilePath, ArchivePath, DownloadQuery, ErrorBody
from api.tasks import task_for_archive, utc
from htbase.messages import ARCHIVERS
from infra.models import Artifact, Task
from infra.storage import FileStore

bp = blueprint("archives", "Download what was captured")
CHUNK_BYTES = 64 * 1024
# Under this policy a document gets an opaque origin and runs no script (a sandbox without
# allow-same-origin or allow-scripts), and loads nothing from the network: an archive shows
# what was captured (inline styles, data: images and fonts), never live resources that would
# tell a page's owner who reads it.
ARCHIVE_POLICY = (
    "sandbox; default-src 'none'; img-src data: blob:; style-src 'unsafe-inline' data:; "
    "font-src data:; media-src data: blob:"
)
INLINE_TYPES = frozenset({"text/html", "application/pdf", "image/png"})
# Shown without a document that could run script on the API's origin, these need no policy
# (Chromium refuses to show a PDF under a sandbox; a PDF's scripts run in the viewer), so
# they may also come straight from the bucket.
SCRIPTLESS_TYPES = frozenset({"application/pdf", "image/png"})
# The formats an archiver stores beside its main file (``?format=``).
EXTRA_TYPES = {"txt": "text/plain; charset=utf-8"}
FILE = {"schema": {"type": "string", "format": "binary"}}
FILE_RESPONSES: Responses = {
    200: {
        "description": "the file, streamed",
        "content": {
            t: FILE for t in ("text/html", "application/pdf", "image/png", "text/plain", "application/octet-stream")
        },
    },
    302: {"description": "a PDF or PNG: a signed URL it may be fetched from (GCS)"},
    404: ErrorBody,
    409: ErrorBody,
}


def archive_headers(content_type: str | None, filename: str) -> dict[str, str]:
    """How stored bytes are served: the sandbox policy on all that could hold script, inline only for
    what a browser shows safely, a filename that needs no quoting, and the charset said once."""
    mimetype, params = parse_options_header(content_type or "application/octet-stream")
    headers = {
        "Content-Type": f"{mimetype}; charset={params['charset']}" if "charset" in params else mimetype,
        "Content-Disposition": f"{'inline' if mimetype in INLINE_TYPES else 'attachment'}; "
        f'filename="{re.sub(r"[^A-Za-z0-9._-]", "_", filename)}"',
    }
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


def _zip_stream(store: FileStore, entries: Iterable[tuple[str, str | bytes]]) -> Iterator[bytes]:
    """A zip of stored objects (name, key) and of made files (name, bytes), made as it is sent: a piece of
    one file at a time in memory."""
    spool = _Spool()
    with zipfile.ZipFile(spool, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, key in entries:
            if isinstance(key, bytes):
                archive.writestr(name, key)
                continue
            with store.open(key) as source, archive.open(name, "w") as target:
                while chunk := source.read(CHUNK_BYTES):
                    target.write(chunk)
                    if data := spool.take():
                        yield data
    yield spool.take()


@bp.get(
    "/archives/<archive_id>/all",
    responses={
        200: {"description": "a zip of every finished file, made as it streams", "content": {"application/zip": FILE}},
        404: ErrorBody,
    },
)
def download_all(path: ArchivePath) -> Response:
    """Every finished file of a task (or of an item's newest task) in one zip."""
    task = task_for_archive(path.archive_id)
    keys = [
        key
        for a in task.artifacts
        if a.status == "success"
        for key in [a.storage_key, *(a.meta.get("extras") or {}).values()]
    ]
    if not keys:
        raise ApiError(404, "not_found", f"task {task.task_id} has no finished artifacts yet")
    entries = [(key.split("/", 1)[1], key) for key in keys]
    return Response(
        _zip_stream(runtime().store, entries), headers=archive_headers("application/zip", f"{task.task_id}.zip")
    )


def _capture(archive_id: str, archiver: str, at: datetime | None) -> tuple[Task, Artifact]:
    """A task's capture by ``archiver``; for an item id, the item's newest successful one (taken at or
    before ``at``)."""
    process = runtime()
    task = process.ledger.task(archive_id)
    if task is None:
        found = process.items.newest_success(archive_id, archiver, at)
        if found is not None:
            return found
        task = process.ledger.latest_task_for_item(archive_id)
        if task is None:
            raise ApiError(404, "not_found", f"no archive {archive_id}")
        artifact = task.artifact(archiver)
        if at is None and artifact is not None and artifact.status in ("pending", "processing"):
            raise ApiError(409, "not_ready", f"{archiver} is {artifact.status}")
        when = f" taken at or before {at.isoformat()}Z" if at else ""
        raise ApiError(404, "not_found", f"item {archive_id} holds no successful {archiver} capture{when}")
    if at is not None:
        raise ApiError(400, "bad_request", "'at' picks a snapshot of an item: give an item id, not a task id")
    artifact = task.artifact(archiver)
    if task.kind == "batch" or artifact is None:
        raise ApiError(404, "not_found", f"task {task.task_id} did not ask for {archiver}")
    if artifact.status in ("pending", "processing"):
        raise ApiError(409, "not_ready", f"{archiver} is {artifact.status}")
    if artifact.status != "success":
        raise ApiError(404, "capture_failed", f"{archiver} {artifact.status}: {artifact.error}")
    return task, artifact


@bp.get("/archives/<archive_id>/<archiver>", responses=FILE_RESPONSES)
def download(path: ArchiveFilePath, query: DownloadQuery) -> BaseResponse:
    """One archiver's file of a task, or the newest successful one of an item (`?at=`: taken at or before
    then); `?format=txt`: readability's plain text."""
    archiver, store = path.archiver, runtime().store
    if archiver not in ARCHIVERS:
        raise ApiError(404, "not_found", f"unknown archiver {archiver!r}")
    task, artifact = _capture(path.archive_id, archiver, utc(query.at))
    key, content_type = artifact.storage_key, artifact.content_type
    if query.format:
        key = (artifact.meta.get("extras") or {}).get(query.format)
        content_type = EXTRA_TYPES[query.format]
    if key is None:  # a capture always stores its file; an extra format may not be there
        raise ApiError(404, "not_found", f"{archiver} stores no {query.format or 'file'}")
    extension = key.rsplit(".", 1)[-1]
    headers = archive_headers(content_type, f"{task.task_id}-{archiver}.{extension}")
    # A document that needs the sandbox is always served from here, under it; other files
    # may come straight from the bucket.
    signed = None if "Content-Security-Policy" in headers else store.signed_url(key, 900)
    if signed:
        return redirect(signed, 302)
    if not query.format:
        headers["X-Content-SHA256"] = artifact.sha256 or ""
    # No Content-Length: sent chunked, a response may exceed Cloud Run's 32 MiB cap on a sized one.
    return Response(_chunks(store.open(key)), headers=headers)
