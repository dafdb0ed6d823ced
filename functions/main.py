"""functions-framework targets: one Cloud Run service per archiver, the summarizer, the dead-letter handler.

    functions-framework --source functions/main.py --target archive_pdf

Every archiver service deploys the same handler; ``ARCHIVERS`` (e.g. ``pdf``)
says which archiver that service runs, and the message names the archiver.
Every target authenticates the push (functions/auth.py) before it builds or
touches the runtime, except ``GET /healthz``: 200 while the ledger answers and the
service's browser works (or none is needed), else 503, for a check off Cloud Run (Cloud
Run keeps paths ending in z to itself and probes these services on TCP); and
``GET /ready``: the ledger, the broker, storage and the browser, each with its state.
The settings are read when the module loads.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from functools import lru_cache

from flask import Request, Response, jsonify

from functions.auth import PushAuthenticator
from functions.push import handle_archive, handle_dead_letter, handle_summarize, handle_webhook, refuse_unauthenticated
from functions.worker import Worker
from htbase.config import Settings
from htbase.logs import setup_logging
from infra.health import readiness
from infra.identity import with_project
from infra.metrics import watch_backlogs
from infra.replica_queue import ReplicaQueue
from infra.runtime import make_publisher
from infra.telemetry import install as install_telemetry

HEALTH_PATH = "/healthz"
READY_PATH = "/ready"  # Cloud Run's front end keeps paths ending in z to itself


@lru_cache(maxsize=1)
def settings() -> Settings:
    loaded = with_project(Settings.from_env())
    setup_logging(loaded)
    install_telemetry(loaded)
    return loaded


@lru_cache(maxsize=1)
def runtime() -> Worker:
    worker = Worker(settings(), make_publisher(settings()))
    # Cloud Run stops an instance with SIGTERM: the browser, the pool and the Cloud SQL connector close.
    atexit.register(worker.close)
    return worker


@lru_cache(maxsize=1)
def authenticator() -> PushAuthenticator:
    return PushAuthenticator.from_settings(settings())


def _health(runtime: Worker) -> Response:
    checks = runtime.health()
    healthy = all(checks.values())
    response = jsonify({"status": "ok" if healthy else "unhealthy", **checks})
    response.status_code = 200 if healthy else 503
    return response


def _ready(runtime: Worker) -> Response:
    """Readiness: the ledger, the broker, storage and the browser (infra/health.py), each with its state."""
    checks = readiness(runtime)
    ok = all(state == "ok" for state in checks.values())
    response = jsonify({"status": "ok" if ok else "unready", "checks": checks})
    response.status_code = 200 if ok else 503
    return response


def _authenticated(handler: Callable[[Worker, Request], Response]) -> Callable[[Request], Response]:
    def target(request: Request) -> Response:
        if request.method == "GET" and request.path == HEALTH_PATH:
            return _health(runtime())
        if request.method == "GET" and request.path == READY_PATH:
            return _ready(runtime())
        refused = refuse_unauthenticated(authenticator(), request)
        return refused if refused is not None else handler(runtime(), request)

    return target


archive = _authenticated(handle_archive)
archive_singlefile = archive_monolith = archive_readability = archive_pdf = archive_screenshot = archive
summarize = _authenticated(handle_summarize)
dead_letter = _authenticated(handle_dead_letter)
deliver_webhook = _authenticated(handle_webhook)  # Cloud Tasks' target: the webhooks queue


def _housekeep(runtime: Worker, request: Request) -> Response:
    """Cloud Scheduler calls this: the sweeper, the outbox relay and the replica's queue, once. The round
    reports the backlogs it keeps, exported before the instance idles (Cloud Run takes its CPU then)."""
    watch_backlogs(runtime.outbox.backlog, ReplicaQueue(runtime.engine).backlog)
    counts = runtime.housekeep()
    install_telemetry(runtime.settings).flush()
    return jsonify(counts)


housekeeping = _authenticated(_housekeep)

# At start-up: a misconfigured service fails to start (Cloud Run never routes to it) rather than failing every push.
authenticator()
