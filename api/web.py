"""The web page at ``/``: read, search and manage the archive in a browser.

Server-rendered (Jinja templates in ``api/templates``), a little script of its
own (``api/static/app.js``: live badges from the task events stream). Behind
the same keys as the API (``api.session``: sign in with a key, a cookie
carries it); every form posts a CSRF token. The page itself runs under a
strict policy (its own script and style only); captured pages are only ever
linked to, served by the archives route under its sandbox, and the reader
view is the readability HTML sanitized (nh3).
"""

from __future__ import annotations

import re
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import nh3
from flask import Blueprint, Response, abort, redirect, render_template, request, send_from_directory, url_for
from werkzeug.exceptions import HTTPException

from api.auth import public, requires
from api.context import api_keys, request_id, runtime
from api.errors import ApiError
from api.session import CSRF_FIELD, csrf_token, csrf_valid, keep_csrf_cookie, sign_in, sign_out, signed_in_by_cookie
from api.transfer import advance_imports, start_import
from htbase.messages import ARCHIVERS, SummarizeRequest
from htbase.urls import InvalidURL, url_hash, validate_url
from infra.catalog import Entry
from infra.documents import isoformat
from infra.ledger import ItemConflict, NewItem
from infra.outbox import summarize_outgoing
from infra.search import InvalidQuery
from infra.storage import FileStore, GcsFileStore
from infra.tags import InvalidTag

bp = Blueprint("web", __name__, template_folder="templates")
STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 30
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src {images}; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
READER_TAGS = {
    "a",
    "p",
    "br",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "blockquote",
    "pre",
    "code",
    "em",
    "strong",
    "b",
    "i",
    "u",
    "s",
    "sub",
    "sup",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "hr",
    "figure",
    "figcaption",
    "dl",
    "dt",
    "dd",
    "q",
    "cite",
    "time",
    "abbr",
    "mark",
    "small",
    "span",
}
ARTICLE = re.compile(r"<article>(.*)</article>", re.S)


def form_post(view):
    """A form the page posts: it must carry this browser's CSRF token."""

    @wraps(view)
    def checked(*args: Any, **kwargs: Any):
        if not csrf_valid(request):
            abort(400, "the form's CSRF token is missing or wrong: reload the page and try again")
        return view(*args, **kwargs)

    return checked


def page_policy(store: FileStore) -> str:
    """The page's policy: a thumbnail is a screenshot, which a GCS store's signed URL may serve (the archives
    route redirects there), so that store's origin may serve images too."""
    images = ["'self'", "data:"]
    if isinstance(store, GcsFileStore):
        endpoint = urlsplit(store.bucket.client.api_endpoint)
        images.append(f"{endpoint.scheme}://{endpoint.netloc}")
    return PAGE_POLICY.format(images=" ".join(images))


@bp.after_request
def page_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", page_policy(runtime().store))
    response.headers["Referrer-Policy"] = "same-origin"
    return keep_csrf_cookie(response)


@bp.app_context_processor
def page_context() -> dict[str, Any]:
    return {
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token,
        "isoformat": isoformat,
        "signed_in": signed_in_by_cookie,
    }


@bp.errorhandler(ApiError)
def to_sign_in(exc: ApiError):
    if exc.status == 401:
        if request.method == "GET" and request.headers.get("Sec-Fetch-Site") == "cross-site":
            # Another site's link (the bookmarklet is one): the browser kept the SameSite=Strict key cookie
            # back. The same address, opened again from this page, is same-site and carries it.
            return render_template("continue.html", target=request.full_path)
        return redirect(url_for("web.sign_in_page", next=request.full_path))
    return render_template("message.html", title="Not allowed", message=exc.message), exc.status


@bp.errorhandler(HTTPException)
def refused(exc: HTTPException):
    return render_template("message.html", title=exc.name, message=exc.description), exc.code or 500


@bp.get("/assets/<path:name>")
@public
def static(name: str):
    return send_from_directory(STATIC, name, max_age=3600)


def back(default: str = "/") -> str:
    """Where a form sends the browser afterwards: a path on this site only."""
    target = request.form.get("next", "")
    return target if target.startswith("/") and not target.startswith("//") else default


@bp.get("/sign-in")
@public
def sign_in_page():
    return render_template("sign_in.html", next=request.args.get("next", "/"))


@bp.post("/sign-in")
@public
@form_post
def sign_in_post():
    key = request.form.get("key", "").strip()
    if api_keys().find(key) is None:
        return render_template("sign_in.html", next=back(), error="unknown or revoked key"), 401
    return sign_in(redirect(back(), 303), key)


@bp.post("/sign-out")
@public
@form_post
def sign_out_post():
    return sign_out(redirect(url_for("web.sign_in_page"), 303))


@bp.get("/")
def home():
    q, tag, status = request.args.get("q", "").strip(), request.args.get("tag", ""), request.args.get("status", "")
    offset = max(int(request.args.get("offset", "0") or 0), 0) if request.args.get("offset", "0").isdigit() else 0
    snippets: dict[str, str] = {}
    error = None
    if q:
        try:
            found = runtime().search.search(q, limit=PAGE_SIZE, offset=offset)
        except InvalidQuery as exc:
            found, error = None, str(exc)
        entries = runtime().catalog.entries([hit.item_id for hit in found.hits]) if found else []
        snippets = {hit.item_id: hit.snippet for hit in found.hits} if found else {}
        total = found.total if found else 0
    else:
        entries, total = runtime().catalog.page(
            limit=PAGE_SIZE, offset=offset, tag=tag or None, failed=status == "failed"
        )
    following = {k: v for k, v in {"q": q, "tag": tag, "status": status, "offset": offset + PAGE_SIZE}.items() if v}
    return render_template(
        "home.html",
        entries=entries,
        total=total,
        q=q,
        tag=tag,
        status=status,
        error=error,
        snippets=snippets,
        tags=runtime().tags.counts(),
        next_page=f"/?{urlencode(following)}" if offset + PAGE_SIZE < total else None,
        bookmarklet=bookmarklet(),
    )


def bookmarklet() -> str:
    base = request.host_url.rstrip("/")
    return f"javascript:location.href='{base}/save?url='+encodeURIComponent(location.href)"


@bp.get("/save")
def save_page():
    """Where the bookmarklet lands: a confirmation, since a link must never change anything by itself."""
    return render_template("save.html", url=request.args.get("url", ""))


@bp.post("/archive")
@form_post
def archive():
    try:
        url = validate_url(request.form.get("url", ""))
    except InvalidURL as exc:
        return render_template("message.html", title="Not archived", message=f"That URL cannot be archived: {exc}"), 400
    item = capture(NewItem(url, url_hash(url)))
    return redirect(url_for("web.item_page", item_id=item), 303)


def capture(new: NewItem) -> str:
    """Capture a URL now, with every enabled archiver; returns its item."""
    try:
        created = runtime().ledger.create_task([new], runtime().settings.archivers, request_id=request_id())
    except ItemConflict as exc:
        abort(409, str(exc))
    runtime().relay.send(created.outbox)
    return created.children[0]["item_id"]


def entry_or_404(item_id: str) -> Entry:
    entries = runtime().catalog.entries([item_id])
    if not entries:
        abort(404, f"no item {item_id}")
    return entries[0]


@bp.get("/items/<item_id>")
def item_page(item_id: str):
    entry = entry_or_404(item_id)
    snapshots = runtime().catalog.snapshots(item_id)
    chosen = next((s for s in snapshots if s.task_id == request.args.get("snapshot")), snapshots[0])
    return render_template(
        "item.html",
        entry=entry,
        snapshots=snapshots,
        snapshot=chosen,
        reader=reader_view(chosen),
        summary=snapshot_summary(chosen, entry),
        archivers=[a for a in ARCHIVERS if chosen.artifact(a) is not None],
    )


def snapshot_summary(snapshot, entry: Entry) -> dict[str, Any]:
    if snapshot.task_id == entry.snapshot.task_id:
        return entry.summary
    made = runtime().summaries.get(snapshot.summary_key) if snapshot.summary_key else None
    return made.result if made is not None and made.status == "success" else {}


def reader_view(snapshot) -> str | None:
    """The snapshot's article, sanitized: its own markup only, no script, no style, links that leave."""
    article = snapshot.artifact("readability")
    if article is None or article.status != "success":
        return None
    document = runtime().store.get(article.storage_key).decode("utf-8", "replace")
    found = ARTICLE.search(document)
    return nh3.clean(
        found[1] if found else document,
        tags=READER_TAGS,
        attributes={
            "a": {"href", "title"},
            "time": {"datetime"},
            "abbr": {"title"},
            "td": {"colspan", "rowspan"},
            "th": {"colspan", "rowspan"},
        },
        url_schemes={"http", "https"},
        link_rel="noopener noreferrer nofollow",
    )


@bp.post("/items/<item_id>/recapture")
@form_post
def recapture(item_id: str):
    entry = entry_or_404(item_id)
    capture(NewItem(entry.url, url_hash(entry.url), item_id))
    return redirect(back(url_for("web.item_page", item_id=item_id)), 303)


@bp.post("/items/<item_id>/summarize")
@form_post
def resummarize(item_id: str):
    snapshot = request.form.get("snapshot") or entry_or_404(item_id).snapshot.task_id
    runtime().relay.send(runtime().outbox.add(summarize_outgoing(SummarizeRequest(snapshot, True, request_id()))))
    return redirect(url_for("web.item_page", item_id=item_id, snapshot=snapshot), 303)


@bp.post("/tasks/<task_id>/cancel")
@form_post
def cancel(task_id: str):
    runtime().ledger.cancel(task_id)
    runtime().replica.sync(task_id)
    return redirect(back(), 303)


@bp.get("/items/<item_id>/delete")
@requires("admin")
def confirm_delete(item_id: str):
    return render_template("delete.html", entry=entry_or_404(item_id))


@bp.post("/items/<item_id>/delete")
@requires("admin")
@form_post
def delete(item_id: str):
    changed = runtime().deletions.delete_item(item_id)
    if changed is None:
        abort(404, f"no item {item_id}")
    runtime().forget(changed)
    return redirect("/", 303)


@bp.post("/items/<item_id>/tags")
@form_post
def add_tag(item_id: str):
    entry_or_404(item_id)
    try:
        runtime().tags.add(item_id, [request.form.get("tag", "")])
    except InvalidTag as exc:
        abort(400, str(exc))
    runtime().search.refresh(item_id)
    return redirect(back(url_for("web.item_page", item_id=item_id)), 303)


@bp.post("/items/<item_id>/tags/remove")
@form_post
def remove_tag(item_id: str):
    try:
        runtime().tags.remove(item_id, [request.form.get("tag", "")])
    except InvalidTag as exc:
        abort(400, str(exc))
    runtime().search.refresh(item_id)
    return redirect(back(url_for("web.item_page", item_id=item_id)), 303)


@bp.get("/import")
def import_page():
    return render_template("import.html")


@bp.post("/import")
@form_post
def import_post():
    upload = request.files.get("file")
    if upload is None:
        abort(400, "choose a file to import")
    try:
        found = start_import(upload.read(), upload.filename or "", None, request.form.get("recapture") == "on")
    except ApiError as exc:
        return render_template("message.html", title="Not imported", message=exc.message), exc.status
    advance_imports()
    return redirect(url_for("web.import_progress", import_id=found.import_id), 303)


@bp.get("/imports/<import_id>")
def import_progress(import_id: str):
    found = runtime().imports.get(import_id)
    if found is None:
        abort(404, f"no import {import_id}")
    return render_template(
        "import_progress.html", found=found, entries=runtime().imports.entries(import_id, limit=500, offset=0)
    )
