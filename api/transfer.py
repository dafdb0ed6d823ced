"""Import and export: bookmark files in (as items, captured at a pace), bookmarks and whole archives out."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from flask import Response, jsonify, request
from flask_openapi3 import FileStorage
from pydantic import BaseModel, Field
from sqlalchemy import select

from api.archives import _zip_stream, archive_headers
from api.context import runtime
from api.errors import ApiError
from api.openapi import blueprint
from api.schemas import MAX_OFFSET, ErrorBody, Id
from htbase.messages import ARCHIVERS, ArtifactStatus, derive_task_status
from infra.bookmarks import MEDIA_TYPES, RENDERERS, Bookmark, UnreadableFile, parse
from infra.catalog import Catalog, Entry
from infra.documents import API, isoformat
from infra.imports import Import
from infra.models import Artifact

bp = blueprint("transfer", "Import bookmarks, export bookmarks and archives")
MAX_IMPORT_BYTES = 32 * 1024 * 1024  # a browser's export of some 100,000 bookmarks
MAX_IMPORT_URLS = 100_000
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class ImportForm(BaseModel):
    file: FileStorage = Field(
        description="a browser's bookmark HTML, Pocket's CSV, our JSON or CSV export, or a list of URLs (one a line)"
    )
    archivers: str | None = Field(None, description="comma-separated; absent: every enabled archiver")
    recapture: bool = Field(False, description="capture URLs that are items already once more")


class ImportPath(BaseModel):
    import_id: Id


class ImportQuery(BaseModel):
    limit: int = Field(100, description="entries shown, held to 1..1000")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class ImportEntryView(BaseModel):
    position: int
    url: str
    outcome: Literal["queued", "started", "duplicate", "invalid"]
    item_id: str | None
    task_id: str | None
    error: str | None
    status: str | None = Field(None, description="the capture's task status, once started")


class ImportDocument(BaseModel):
    import_id: str
    status: Literal["capturing", "done"]
    filename: str
    total: int
    counts: dict[str, int] = Field(description="entries by outcome: queued, started, duplicate, invalid")
    captures: dict[str, int] = Field(description="started captures: running, finished")
    created_at: datetime
    status_url: str
    entries: list[ImportEntryView] | None = None


class ExportQuery(BaseModel):
    format: Literal["html", "json", "csv"] = "json"


@bp.before_request
def larger_uploads() -> None:
    # An import's file may be far larger than an API body (1 MiB); only this blueprint's routes take one.
    if request.endpoint in (f"{bp.name}.import_bookmarks", "web.import_post"):
        request.max_content_length = request.max_form_memory_size = MAX_IMPORT_BYTES


def _archivers(chosen: str | None) -> list[str]:
    enabled = runtime().settings.archivers
    if chosen is None:
        return list(enabled)
    names = list(dict.fromkeys(name.strip() for name in chosen.split(",") if name.strip()))
    refused = [name for name in names if name not in ARCHIVERS or name not in enabled]
    if not names or refused:
        raise ApiError(400, "archiver_disabled", f"archivers {refused} are not enabled here; enabled: {list(enabled)}")
    return names


def advance_imports() -> None:
    """Start the captures whose turn it is (also on every look at an import's progress)."""
    runtime().relay.send(runtime().imports.advance())


def import_view(found: Import, entries: bool = False, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    imports = runtime().imports
    captures = imports.capture_counts(found.import_id)
    done = found.finished_at is not None and not captures.get("running")
    view: dict[str, Any] = {
        "import_id": found.import_id,
        "status": "done" if done else "capturing",
        "filename": found.filename,
        "total": found.total,
        "counts": found.counts,
        "captures": dict(captures),
        "created_at": isoformat(found.created_at),
        "status_url": f"{API}/imports/{found.import_id}",
    }
    if entries:
        page = imports.entries(found.import_id, limit=limit, offset=offset)
        statuses = _task_statuses([e.task_id for e in page if e.task_id])
        view["entries"] = [
            {
                "position": e.position,
                "url": e.url,
                "outcome": e.outcome,
                "item_id": e.item_id,
                "task_id": e.task_id,
                "error": e.error,
                "status": statuses.get(e.task_id or ""),
            }
            for e in page
        ]
    return view


def _task_statuses(task_ids: list[str]) -> dict[str, str]:
    if not task_ids:
        return {}
    with runtime().ledger.session() as session:
        rows = session.execute(select(Artifact.task_id, Artifact.status).where(Artifact.task_id.in_(task_ids))).all()
    by_task: dict[str, list[ArtifactStatus]] = {}
    for task_id, status in rows:
        by_task.setdefault(task_id, []).append(ArtifactStatus(status))
    return {task_id: derive_task_status(statuses)[0].value for task_id, statuses in by_task.items()}


def start_import(data: bytes, filename: str, archivers: str | None, recapture: bool) -> Import:
    """Read the file, make its items and queue their captures (the API's route and the page's form)."""
    chosen = _archivers(archivers)
    try:
        bookmarks = parse(data)
    except UnreadableFile as exc:
        raise ApiError(400, "unreadable_file", str(exc)) from None
    if not bookmarks:
        raise ApiError(400, "unreadable_file", "the file holds no bookmarks or URLs")
    if len(bookmarks) > MAX_IMPORT_URLS:
        raise ApiError(400, "too_many_urls", f"an import holds at most {MAX_IMPORT_URLS:,} URLs")
    return runtime().imports.create(bookmarks, chosen, filename=filename, recapture=recapture)


@bp.post("/import", responses={202: ImportDocument, 413: ErrorBody})
def import_bookmarks(form: ImportForm) -> Response:
    """Import a bookmark file: every new URL becomes an item now (a browser's folders become its tags), and
    its capture is queued, started a few at a time; a URL already archived adds nothing unless `recapture`."""
    created = start_import(form.file.read(), form.file.filename or "", form.archivers, form.recapture)
    advance_imports()
    response = jsonify(import_view(runtime().imports.get(created.import_id) or created))
    response.status_code, response.headers["Location"] = 202, f"{API}/imports/{created.import_id}"
    return response


@bp.get("/imports/<import_id>", responses={200: ImportDocument, 404: ErrorBody})
def get_import(path: ImportPath, query: ImportQuery) -> Response:
    """An import's progress, and a page of its URLs, each with its outcome and its capture's status."""
    advance_imports()
    found = runtime().imports.get(path.import_id)
    if found is None:
        raise ApiError(404, "not_found", f"no import {path.import_id}")
    return jsonify(import_view(found, entries=True, limit=min(max(query.limit, 1), 1000), offset=query.offset))


def bookmarks(entries: list[Entry]) -> list[Bookmark]:
    return [Bookmark(e.url, e.title, tuple(e.tags), e.created_at, e.captured_at) for e in entries]


BOOKMARK = {
    "type": "object",
    "properties": {
        "url": {"type": "string"},
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "added_at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "captured_at": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
}
EXPORT_SCHEMAS = {
    "html": {"type": "string"},
    "csv": {"type": "string"},
    "json": {"type": "object", "properties": {"bookmarks": {"type": "array", "items": BOOKMARK}}},
}


@bp.get(
    "/export",
    responses={
        200: {
            "description": "the bookmark file",
            "content": {MEDIA_TYPES[format]: {"schema": schema} for format, schema in EXPORT_SCHEMAS.items()},
        }
    },
)
def export(query: ExportQuery) -> Response:
    """Every item as a bookmark (URL, title, tags, when saved and last captured): browsers import the HTML."""
    catalog = runtime().catalog
    every = [entry for ids in catalog.every_item_id() for entry in catalog.entries(ids)]
    return Response(
        RENDERERS[query.format](bookmarks(every)),
        headers={
            "Content-Type": MEDIA_TYPES[query.format],
            "Content-Disposition": f'attachment; filename="htbase-bookmarks.{query.format}"',
        },
    )


@bp.get(
    "/export/archive",
    responses={
        200: {
            "description": "a zip, made as it streams",
            "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
def export_archive() -> Response:
    """Every item's newest files in one zip, with an index.html that opens offline."""
    return Response(
        _zip_stream(runtime().store, _archive_entries(runtime().catalog)),
        headers=archive_headers("application/zip", "htbase-archive.zip"),
    )


def _archive_entries(catalog: Catalog) -> Iterator[tuple[str, str | bytes]]:
    """Each item's newest files under a folder named after it, then the index (streamed after the
    request's context is gone: everything it needs is passed in)."""
    listed: list[tuple[Entry, list[str]]] = []
    for ids in catalog.every_item_id():
        for entry in catalog.entries(ids):
            folder, files = SAFE_NAME.sub("_", entry.item_id), []
            for artifact in entry.snapshot.artifacts:
                if artifact.status != "success":
                    continue
                for key in (artifact.storage_key, *(artifact.meta.get("extras") or {}).values()):
                    name = f"{folder}/{key.split('/', 1)[1]}"
                    files.append(name)
                    yield name, key
            listed.append((entry, files))
    yield "index.html", _index_page(listed).encode()


def _index_page(listed: list[tuple[Entry, list[str]]]) -> str:
    """The zip's table of contents: plain HTML, no script, every link relative."""
    esc = html.escape
    rows = []
    for entry, files in listed:
        links = " ".join(f'<a href="{esc(name)}">{esc(name.rsplit("/", 1)[1])}</a>' for name in files)
        captured = isoformat(entry.captured_at) or ""
        rows.append(
            f"<li><h2>{esc(entry.title or entry.url)}</h2>"
            f'<p><a href="{esc(entry.url)}">{esc(entry.url)}</a> · captured {esc(captured)}'
            + (f" · tags: {esc(', '.join(entry.tags))}" if entry.tags else "")
            + f"</p><p>{links or 'nothing was captured'}</p></li>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>htbase archive</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:50em;margin:auto;padding:1em}"
        "li{margin-bottom:1em}h2{font-size:1.1em;margin:0}</style></head><body>"
        f"<h1>htbase archive</h1><p>{len(listed)} items, newest capture first.</p><ol>"
        + "".join(rows)
        + "</ol></body></html>\n"
    )
