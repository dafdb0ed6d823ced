"""Health: whether this API's ledger answers (open to all, as load balancers and probes call it)."""
from __future__ import annotations

from flask import Response, jsonify

from api.context import runtime
from api.errors import error_response
from api.openapi import blueprint
from api.schemas import ErrorBody, Health
from infra.documents import API

bp = blueprint("health", "Whether the service answers", url_prefix="")
RESPONSES = {200: Health, 503: ErrorBody}


def _health() -> Response:
    try:
        runtime().ledger.ping()
    except Exception as exc:
        return error_response(503, "unhealthy", f"database unreachable: {type(exc).__name__}")
    settings = runtime().settings
    return jsonify({"status": "ok", "role": settings.service_role, "archivers": list(settings.archivers)})


@bp.get(f"{API}/health", responses=RESPONSES)
def health() -> Response:
    """200 when the ledger answers, else 503."""
    return _health()


@bp.get("/healthz", responses=RESPONSES)
def healthz() -> Response:
    """The same, at the path probes expect."""
    return _health()
