"""One webhook attempt: claim it, POST the signed task document, record what the receiver said.

Every answer of the receiver is recorded and acknowledged, so the transport never retries on its
own: the next attempt, if any, is a message held back until its time (infra/webhooks.py). Only an
outage of ours (the ledger) answers 503, for the transport to try again.
"""

from __future__ import annotations

import json
import logging
import time

from functions.deliveries import Delivery
from functions.worker import Worker
from htbase.logs import log
from htbase.messages import WebhookRequest
from infra.documents import task_view
from infra.egress.policy import EgressRefused
from infra.metrics import WEBHOOK_DELIVERIES
from infra.telemetry import outgoing_headers
from infra.webhooks import EVENT, post, signature

logger = logging.getLogger("htbase.webhook")


def deliver(runtime: Worker, request: WebhookRequest) -> Delivery:
    attempt = runtime.webhooks.claim(request.delivery_id)
    if isinstance(attempt, str):
        log(logger, logging.INFO, f"webhook attempt skipped: {attempt}", delivery_id=request.delivery_id)
        return Delivery(True, attempt)
    task = runtime.ledger.task(attempt.task_id)
    if task is None:  # deleted since the claim, its deliveries with it
        log(logger, logging.INFO, "webhook attempt skipped: missing", delivery_id=request.delivery_id)
        return Delivery(True, "missing")
    document = {
        **task_view(task, runtime.ledger.children(task.task_id) if task.kind == "batch" else None),
        "event": EVENT,
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    status, error, refused = None, None, False
    try:
        key = runtime.settings.webhook_key
        if not key:
            raise EgressRefused("WEBHOOK_SECRET is not set: a webhook is never sent unsigned")
        timestamp = int(time.time())
        headers = outgoing_headers(
            {
                "Content-Type": "application/json",
                "User-Agent": "htbase-webhooks",
                "webhook-id": attempt.delivery_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": signature(key, attempt.delivery_id, timestamp, body),
            }
        )
        status = post(attempt.url, body, headers, runtime.egress_policy, runtime.settings.webhook_timeout_s)
    except EgressRefused as exc:  # never sent, and no later attempt would be
        error, refused = f"not sent: {exc}", True
    except Exception as exc:  # no answer: the network, a timeout, the receiver's DNS
        error = f"{type(exc).__name__}: {exc}"
    rows = runtime.webhooks.record(attempt, status, error, final=refused)
    WEBHOOK_DELIVERIES.add(
        1,
        {
            "outcome": "delivered"
            if status and 200 <= status < 300
            else "refused"
            if refused
            else "retry"
            if rows
            else "failed"
        },
    )
    if rows:
        runtime.relay.send(rows)
    runtime.replica.sync(attempt.task_id)
    log(
        logger,
        logging.INFO if status and status < 300 else logging.WARNING,
        "webhook attempt",
        task_id=attempt.task_id,
        delivery_id=attempt.delivery_id,
        attempt=attempt.number,
        status=status,
        error=error,
        retry=bool(rows),
    )
    return Delivery(True, f"answered {status}" if status else "no answer")


def dead_letter(request: WebhookRequest, deliveries: str) -> Delivery:
    """An attempt whose handler kept failing (our ledger was down) and that the embedded dispatcher
    dead-lettered: nothing to record, housekeeping asks for the attempt again once it is overdue."""
    log(
        logger,
        logging.WARNING,
        "webhook attempt dead-lettered; housekeeping will ask for it again",
        delivery_id=request.delivery_id,
        deliveries=deliveries,
    )
    return Delivery(True, "left to housekeeping")
