"""One archive delivery, start to finish: claim, capture, store, record.

Idempotent on (task, archiver): a finished artifact or one under a live lease
is acknowledged without a second capture. A permanent failure is recorded and
acknowledged; a transient one is recorded and handed back for redelivery
until the attempts run out, or sooner when another try is not worth its cost:
a page that timed out twice, or attempts that could take the task past
MAX_TASK_CAPTURE_SECONDS of capturing.
"""

from __future__ import annotations

import logging
import time

from functions.archivers.base import CaptureError, CaptureTimeout, capture_timeout
from functions.deliveries import Delivery
from functions.worker import Worker
from htbase.logs import log
from htbase.messages import ArchiveRequest, SummarizeRequest
from infra.egress.policy import EgressRefused, HostNotFound
from infra.ledger import ClaimOutcome
from infra.metrics import CAPTURE_DURATION, CAPTURE_SIZE, CAPTURES, LEASE_TAKEOVERS, error_kind
from infra.outbox import summarize_outgoing
from infra.telemetry import TRACER

logger = logging.getLogger("htbase.capture")


def storage_key(task_id: str, archiver: str, extension: str) -> str:
    return f"{task_id}/{archiver}.{extension}"


def archive(runtime: Worker, request: ArchiveRequest) -> Delivery:
    ledger, fields = runtime.ledger, {"task_id": request.task_id, "archiver": request.archiver}
    claim = ledger.claim(request.task_id, request.archiver, runtime.worker_id)
    if claim.outcome is not ClaimOutcome.CLAIMED:
        log(
            logger,
            logging.INFO if claim.outcome is not ClaimOutcome.MISSING else logging.WARNING,
            f"delivery skipped: {claim.outcome}",
            **fields,
        )
        if claim.outcome is ClaimOutcome.DONE:
            # A redelivery of finished work: the process that finished it may have died before it wrote
            # the replica (and so before it acknowledged). This is the write it did not make.
            runtime.replica.sync(request.task_id)
        return Delivery(True, str(claim.outcome))
    runtime.replica.sync(request.task_id)

    started = time.monotonic()
    with TRACER.start_as_current_span(
        f"capture {request.archiver}",
        attributes={"archiver": request.archiver, "attempt": claim.attempts, "task_id": request.task_id},
    ) as span:
        delivery = _capture(runtime, request, claim.attempts, fields)
        outcome = {"stored": "success", "lease lost": "lease_lost"}.get(
            delivery.reason, "failed" if delivery.ack else "retried"
        )
        span.set_attribute("outcome", outcome)
    CAPTURE_DURATION.record(time.monotonic() - started, {"archiver": request.archiver, "outcome": outcome})
    return delivery


def _capture(runtime: Worker, request: ArchiveRequest, attempts: int, fields: dict) -> Delivery:
    """Capture, store and record one claimed attempt."""
    ledger, started = runtime.ledger, time.monotonic()
    log(logger, logging.INFO, "capture started", attempt=attempts, url=request.url, **fields)
    with ledger.holding(request.task_id, request.archiver, runtime.worker_id):
        try:
            runtime.egress_policy.check_url(request.url)
            capture = runtime.archiver(request.archiver).capture(request.url, request.options, request.task_id)
            stored = runtime.store.put(
                storage_key(request.task_id, request.archiver, capture.extension), capture.data, capture.content_type
            )
            meta = dict(capture.metadata)
            if capture.extras:
                meta["extras"] = {
                    ext: runtime.store.put(storage_key(request.task_id, request.archiver, ext), data, content_type).key
                    for ext, (data, content_type) in capture.extras.items()
                }
        except Exception as exc:
            return _failed(runtime, request, exc, attempts, fields)

    duration_ms = int((time.monotonic() - started) * 1000)
    follow_up = (
        [summarize_outgoing(SummarizeRequest(request.task_id, request_id=request.request_id))]
        if request.archiver == "readability"
        else []
    )
    outbox = ledger.complete(
        request.task_id,
        request.archiver,
        runtime.worker_id,
        stored,
        meta=meta,
        duration_ms=duration_ms,
        follow_up=follow_up,
    )
    if outbox is None:  # our lease expired and someone else took over: theirs is the record
        log(logger, logging.WARNING, "capture finished after losing its lease; discarded", **fields)
        LEASE_TAKEOVERS.add(1, {"archiver": request.archiver, "noticed_by": "holder"})
        return Delivery(True, "lease lost")
    runtime.search.try_refresh(item_id=request.item_id)
    log(logger, logging.INFO, "capture stored", size=stored.size, duration_ms=duration_ms, **fields)
    CAPTURES.add(1, {"archiver": request.archiver, "outcome": "success"})
    CAPTURE_SIZE.record(stored.size, {"archiver": request.archiver})
    if outbox and runtime.publisher is not None:
        runtime.relay.send(outbox)
    runtime.replica.sync(request.task_id)
    return Delivery(True, "stored")


def dead_letter(runtime: Worker, request: ArchiveRequest, deliveries: str) -> Delivery:
    """A capture request that exhausted its deliveries: fail the artifact with the last error."""
    task = runtime.ledger.task(request.task_id)
    artifact = task.artifact(request.archiver) if task else None
    last = artifact.error if artifact else None
    error = f"undeliverable after {deliveries} delivery attempts" + (f"; last error: {last}" if last else "")
    failed = runtime.ledger.fail_undelivered(request.task_id, request.archiver, error)
    runtime.replica.sync(request.task_id)
    log(
        logger,
        logging.ERROR,
        "dead letter recorded",
        task_id=request.task_id,
        archiver=request.archiver,
        marked_failed=failed,
        error=error,
    )
    return Delivery(True, "dead-lettered")


def _failed(runtime: Worker, request: ArchiveRequest, exc: Exception, attempts: int, fields: dict) -> Delivery:
    permanent = isinstance(exc, (EgressRefused, HostNotFound)) or (isinstance(exc, CaptureError) and exc.permanent)
    if isinstance(exc, (CaptureError, EgressRefused, HostNotFound)):
        error = str(exc)
    else:  # a bug or an outage (storage, browser): worth a retry, and worth a stack trace
        logger.exception("capture crashed")
        error = f"{type(exc).__name__}: {exc}"
    if not permanent and (spent := _not_worth_another_try(runtime, request, exc, attempts)):
        permanent, error = True, f"{error}; not retried: {spent}"
    final = runtime.ledger.fail(request.task_id, request.archiver, runtime.worker_id, error, permanent=permanent)
    CAPTURES.add(
        1, {"archiver": request.archiver, "outcome": "failed" if final else "retried", "error_kind": error_kind(exc)}
    )
    runtime.replica.sync(request.task_id)
    log(logger, logging.WARNING, "capture failed" + (" for good" if final else "; will retry"), error=error, **fields)
    return Delivery(True, "failed") if final else Delivery(False, error)


def _not_worth_another_try(runtime: Worker, request: ArchiveRequest, exc: Exception, attempts: int) -> str:
    """Why a transient failure after ``attempts`` tries gets no more ("" if it does)."""
    if isinstance(exc, CaptureTimeout) and attempts >= exc.attempts_worth:
        return f"timed out {attempts} times"
    try:
        timeout = capture_timeout(runtime.settings, request.options)
    except CaptureError as bad_option:  # no try will get past it
        return str(bad_option)
    budget = runtime.settings.max_task_capture_s
    if (attempts + 1) * timeout > budget:
        return f"another try of up to {timeout:g}s would pass the task's {budget:g}s of capture time"
    return ""
