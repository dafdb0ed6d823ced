"""Health (open to all, as load balancers and probes call it): liveness, whether this API's ledger
answers; readiness, whether every part a request needs answers now (infra/health.py), the browser
too where this process captures (the all-in-one process)."""

from __future__ import annotations

from flask import Response, jsonify
from pydantic import BaseModel

from api.auth import public
from api.context import runtime
from api.errors import error_response
from api.openapi import Responses, blueprint
from api.schemas import ErrorBody, Health
from infra.documents import API
from infra.health import readiness

bp = blueprint("health", "Whether the service answers", url_prefix="")
RESPONSES: Responses = {200: Health, 503: ErrorBody}


def _health() -> Response:
    try:
        runtime().ledger.ping()
    except Exception as exc:
        return error_response(503, "unhealthy", f"database unreachable: {type(exc).__name__}")
    settings = runtime().settings
    return jsonify({"status": "ok", "role": settings.service_role, "archivers": list(settings.archivers)})


@bp.get(f"{API}/health", responses=RESPONSES)
@public
def health() -> Response:
    """200 when the ledger answers, else 503."""
    return _health()


@bp.get("/healthz", responses=RESPONSES)
@public
def healthz() -> Response:
    """The same, at the path probes expect."""
    return _health()


class Readiness(BaseModel):
    status: str  # "ok" or "unready"
    checks: dict[str, str]  # part -> "ok" or why not


@bp.get(f"{API}/ready", responses={200: Readiness, 503: Readiness})
@public
def ready() -> Response:
    """200 when the ledger, the broker's publish path and file storage all answer, and the browser works
    where this process captures, else 503 saying which not."""
    checks = readiness(runtime())
    ok = all(state == "ok" for state in checks.values())
    response = jsonify({"status": "ok" if ok else "unready", "checks": checks})
    response.status_code = 200 if ok else 503
    return response
