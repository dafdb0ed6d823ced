"""Push handlers: parse the Pub/Sub envelope, call one function, map the result to a status.

2xx acknowledges; 5xx or 429 asks Pub/Sub (or the embedded dispatcher) to
redeliver. A malformed envelope or message answers 400 with the reason in the
log: it can never succeed, so the dead-letter policy takes it (the dead-letter
handler itself acknowledges and drops it). A push that
fails authentication answers 401 (see functions/auth.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial

from flask import Flask, Request, Response
from flask import request as current_request

from functions.auth import PushAuthenticator, PushUnauthorized
from functions.deliveries import Delivery, archive, summary, webhook
from functions.worker import Worker
from htbase.logs import log
from htbase.messages import (
    ArchiveRequest,
    MessageError,
    PushMessage,
    SummarizeRequest,
    WebhookRequest,
    parse_push_envelope,
    parse_request,
)
from htbase.topology import ARCHIVE_PATH, DEAD_LETTER_PATH, SUMMARIZE_PATH, WEBHOOK_PATH
from infra.metrics import record_delivery
from infra.telemetry import consuming

logger = logging.getLogger("htbase.push")


def _answer(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def refuse_unauthenticated(authenticator: PushAuthenticator, request: Request) -> Response | None:
    """The 401 answer for a request that fails authentication, or None to let it through."""
    try:
        authenticator.verify(request)
    except PushUnauthorized as exc:
        log(logger, logging.WARNING, "push refused: not authenticated", reason=exc.reason, path=request.path)
        return _answer(401, {"error": {"code": "unauthorized", "message": exc.reason}})
    return None


def _envelope(request: Request) -> PushMessage:
    try:
        body = json.loads(request.get_data())
    except (ValueError, RecursionError):  # RecursionError: nested deeper than any envelope
        raise MessageError("push body is not JSON") from None
    return parse_push_envelope(body)


def handle(request: Request, work: Callable[[PushMessage], Delivery], *, drop_malformed: bool = False) -> Response:
    """``drop_malformed``: acknowledge a message that can never be processed instead of refusing it
    (where nothing is left to take it, a refusal would only bring it back forever)."""
    try:
        message = _envelope(request)
    except MessageError as exc:
        return _answer_malformed(request, exc, drop_malformed)
    # The delivery continues the trace its message carries; its answer is the span's outcome.
    subscription = message.subscription.rsplit("/", 1)[-1]
    with consuming(
        f"deliver {subscription}",
        message.attributes,
        {
            "messaging.destination.subscription.name": subscription,
            "messaging.message.id": message.message_id,
            "delivery_attempt": message.delivery_attempt or 0,
        },
    ) as span:
        response = _deliver(request, work, message, drop_malformed)
        span.set_attribute("http.response.status_code", response.status_code)
    record_delivery(request.path, message, response.status_code)
    return response


def _deliver(
    request: Request, work: Callable[[PushMessage], Delivery], message: PushMessage, drop_malformed: bool
) -> Response:
    try:
        delivery = work(message)
    except MessageError as exc:
        return _answer_malformed(request, exc, drop_malformed)
    except Exception as exc:  # an outage (database, storage): ask for redelivery
        logger.exception("push handler failed; asking for redelivery")
        return _answer(503, {"error": {"code": "unavailable", "message": f"{type(exc).__name__}: {exc}"}})
    if delivery.ack:
        return _answer(200, {"status": delivery.reason})
    if delivery.retry_after_s is not None:
        return _answer(
            429,
            {"status": "retry", "reason": delivery.reason},
            {"Retry-After": str(max(1, round(delivery.retry_after_s)))},
        )
    return _answer(503, {"status": "retry", "reason": delivery.reason})


def _answer_malformed(request: Request, exc: MessageError, drop_malformed: bool) -> Response:
    if drop_malformed:
        log(logger, logging.ERROR, "malformed push dropped", error=str(exc), path=request.path)
        return _answer(200, {"status": "dropped", "reason": str(exc)})
    log(
        logger,
        logging.ERROR,
        "malformed push refused; it will be dead-lettered, not retried",
        error=str(exc),
        path=request.path,
    )
    return _answer(400, {"error": {"code": "bad_message", "message": str(exc)}})


def handle_archive(runtime: Worker, request: Request) -> Response:
    def work(message: PushMessage) -> Delivery:
        archive_request = ArchiveRequest.from_json(message.data)
        if archive_request.archiver not in runtime.settings.archivers:
            raise MessageError(
                f"this service runs {list(runtime.settings.archivers)}, not {archive_request.archiver!r}"
            )
        return archive.archive(runtime, archive_request)

    return handle(request, work)


def handle_summarize(runtime: Worker, request: Request) -> Response:
    return handle(
        request,
        lambda message: summary.summarize(runtime, SummarizeRequest.from_json(message.data), message.delivery_attempt),
    )


def handle_webhook(runtime: Worker, request: Request) -> Response:
    """A webhook attempt (a Cloud Tasks HTTP task carrying a push envelope, or the embedded dispatcher's)."""
    return handle(request, lambda message: webhook.deliver(runtime, WebhookRequest.from_json(message.data)))


def handle_dead_letter(runtime: Worker, request: Request) -> Response:
    """A message that exhausted its deliveries: record the failure (on the artifact, or on the
    summary) so nothing waits forever.

    Everything that arrives here is acknowledged but an outage: a message that can never be
    processed is logged and dropped, since no later delivery could do better.
    """

    def work(message: PushMessage) -> Delivery:
        deliveries = message.attributes.get("CloudPubSubDeadLetterSourceDeliveryCount", "?")
        dead = parse_request(message.data)
        if isinstance(dead, SummarizeRequest):
            return summary.dead_letter(runtime, dead, deliveries)
        if isinstance(dead, WebhookRequest):
            return webhook.dead_letter(dead, deliveries)
        return archive.dead_letter(runtime, dead, deliveries)

    return handle(request, work, drop_malformed=True)


def create_push_app(runtime: Worker, *, authenticator: PushAuthenticator | None) -> Flask:
    """The push endpoints as one WSGI app.

    ``authenticator=None`` only for the embedded dispatcher, which calls the app
    in-process: nothing crosses a network there. Anything served must pass one.
    """
    app = Flask("htbase.push")
    if authenticator is not None:
        app.before_request(lambda: refuse_unauthenticated(authenticator, current_request))
    handlers = {
        ARCHIVE_PATH: handle_archive,
        SUMMARIZE_PATH: handle_summarize,
        DEAD_LETTER_PATH: handle_dead_letter,
        WEBHOOK_PATH: handle_webhook,
    }
    for path, handler in handlers.items():
        app.add_url_rule(path, handler.__name__, partial(_serve, handler, runtime), methods=["POST"])
    return app


def _serve(handler: Callable[[Worker, Request], Response], runtime: Worker) -> Response:
    return handler(runtime, current_request)
