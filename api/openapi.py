"""The OpenAPI document and its page: how route modules declare themselves, and where it is all read.

Each route module makes its blueprint with ``blueprint()``; any route declared on it with
flask-openapi3's ``get``/``post``/``delete`` (``path``, ``query`` and ``body`` typed with
``api.schemas`` models, ``responses`` naming theirs) is validated by those models and
appears in ``/api/v2/openapi.json``; ``auth.document_scopes`` adds who may call it. The
page at ``/api/v2/docs`` is Redoc from its wheel: no CDN, no inline script, so it works
offline and under a strict policy.
"""

from __future__ import annotations

from http import HTTPStatus
from pathlib import Path
from typing import Any

import flask_openapi3_redoc
from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory
from flask_openapi3 import APIBlueprint, Info, Tag
from pydantic import BaseModel

from api.auth import public
from api.schemas import ErrorBody
from infra.documents import API

INFO = Info(
    title="htbase",
    version="2",
    description=(
        "Archive web pages five ways (SingleFile, monolith, readability, PDF, screenshot) and summarize them. "
        'Errors are JSON `{"error": {"code", "message"}}`.'
    ),
)
# What an operation may answer, as flask-openapi3 takes it: a status and its body's model (or a description).
Responses = dict[str | int | HTTPStatus, type[BaseModel] | dict[Any, Any] | None]
# Every operation may meet these; each declares its own others (404, 409, 413, ...).
COMMON_RESPONSES: Responses = {400: ErrorBody, 503: ErrorBody}
REDOC_ASSETS = Path(flask_openapi3_redoc.__file__).parent / "templates" / "redoc" / "js"
DOCS_PAGE = (Path(__file__).parent / "docs" / "index.html").read_text()
# The page's own script only; Redoc styles with inline <style> and searches in a blob: worker.
DOCS_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def blueprint(name: str, description: str, url_prefix: str = API) -> APIBlueprint:
    """Routes (under /api/v2) tagged ``name`` in the document; each operation is named after its function."""
    return APIBlueprint(
        name,
        f"api.{name}",
        url_prefix=url_prefix,
        abp_tags=[Tag(name=name, description=description)],
        abp_responses=COMMON_RESPONSES,
        operation_id_callback=lambda *, name, **_: name,
    )


docs = Blueprint("docs", __name__, url_prefix=API)


@docs.get("/openapi.json")
@public
def document() -> Response:
    return jsonify(current_app.extensions["htbase.openapi"])


@docs.get("/docs")
@public
def page() -> Response:
    return Response(DOCS_PAGE, mimetype="text/html", headers={"Content-Security-Policy": DOCS_POLICY})


@docs.get("/docs/redoc.standalone.js")
@public
def redoc() -> Response:
    return send_from_directory(REDOC_ASSETS, "redoc.standalone.js", max_age=86400)


def register_docs(app: Flask, document: dict) -> None:
    app.extensions["htbase.openapi"] = document
    app.register_blueprint(docs)
