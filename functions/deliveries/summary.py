"""One summary delivery: read the article text, summarize it once, record the result.

The summary's key hashes the text's sha256, the model id and the prompt
version, so the same article is never sent to the same model twice unless a
client forces it. A request that exhausts its deliveries fails its summary with
the reason (``dead_letter``), so no client waits for it forever.
"""

from __future__ import annotations

import hashlib
import logging

from functions.deliveries import Delivery
from functions.summarizer.errors import RetryLater, SummaryFailed
from functions.summarizer.pipeline import cache_key
from functions.summarizer.schema import Summary
from functions.worker import Worker
from htbase.logs import log
from htbase.messages import SummarizeRequest
from infra.metrics import SUMMARIES, SUMMARY_DURATION, SUMMARY_TOKENS
from infra.models import Artifact, Task

logger = logging.getLogger("htbase.summarize")


def summarize(runtime: Worker, request: SummarizeRequest, delivery_attempt: int | None = None) -> Delivery:
    """``delivery_attempt``: Pub/Sub's count of this message's deliveries, where it sends one."""
    fields = {"task_id": request.task_id}
    article = _readable_article(runtime.ledger.task(request.task_id))
    if article is None:
        log(logger, logging.WARNING, "summary skipped: no readable article", **fields)
        return Delivery(True, "no readable article")

    text = runtime.store.get(article.meta["extras"]["txt"]).decode("utf-8")
    summarizer = runtime.summarizer
    text_sha256 = article.meta.get("text_sha256") or hashlib.sha256(text.encode()).hexdigest()
    key = cache_key(text_sha256, summarizer.model_id, summarizer.prompt_version)
    existing = runtime.summaries.get(key)
    if existing is not None and existing.status == "success" and not request.force:
        runtime.summaries.attach(request.task_id, key)
        runtime.replica.sync(request.task_id)
        runtime.search.try_refresh(task_id=request.task_id)
        log(logger, logging.INFO, "summary reused", cache_key=key, **fields)
        return Delivery(True, "cached")

    # On the last delivery a rate-limited chain falls back rather than asking for another. The
    # subscription dead-letters after MAX_DELIVERY_ATTEMPTS; where the push does not number its
    # deliveries (the emulator), the summary's own count says which one this is.
    deliveries = runtime.summaries.delivered(
        request.task_id, key, model=summarizer.model_id, prompt_version=summarizer.prompt_version
    )
    last_try = (delivery_attempt or deliveries) >= runtime.settings.max_delivery_attempts
    try:
        summary = summarizer.summarize(
            text,
            title=article.meta.get("title") or "",
            language=article.meta.get("language") or "",
            may_retry_later=not last_try,
        )
    except RetryLater as exc:
        runtime.summaries.delivery_failed(key, str(exc))
        log(
            logger,
            logging.INFO,
            "summary rate limited; asking for redelivery",
            retry_after_s=exc.retry_after_s,
            deliveries=deliveries,
            **fields,
        )
        SUMMARIES.add(1, {"provider": provider_of(summarizer.model_id), "outcome": "retry"})
        return Delivery(False, str(exc), retry_after_s=exc.retry_after_s)
    except SummaryFailed as exc:
        SUMMARIES.add(
            1, {"provider": provider_of(summarizer.model_id), "outcome": "retry" if exc.transient else "failed"}
        )
        if exc.transient:
            runtime.summaries.delivery_failed(key, exc.reason)
            return Delivery(False, exc.reason)
        runtime.summaries.save(
            request.task_id,
            key,
            status="failed",
            error=exc.reason,
            raw_text=exc.raw_text or None,
            model=summarizer.model_id,
            prompt_version=summarizer.prompt_version,
        )
        _sync_every_task_showing(runtime, key)
        log(logger, logging.WARNING, "summary failed", error=exc.reason, **fields)
        return Delivery(True, "failed")
    # Filed under the model that wrote it: a fallback's summary never poses as the primary model's,
    # so a later request tries the primary again.
    written_by = cache_key(text_sha256, summary.model, summary.prompt_version)
    runtime.summaries.save(
        request.task_id,
        written_by,
        status="success",
        result=summary.to_dict(),
        model=summary.model,
        prompt_version=summary.prompt_version,
        requested_key=key,
    )
    _sync_every_task_showing(runtime, written_by)
    runtime.search.try_refresh(task_id=request.task_id)
    log(
        logger,
        logging.INFO,
        "summary stored",
        model=summary.model,
        chunks=summary.chunks,
        duration_ms=summary.duration_ms,
        **fields,
    )
    record_summary(summary)
    return Delivery(True, "stored")


def dead_letter(runtime: Worker, request: SummarizeRequest, deliveries: str) -> Delivery:
    """A summarize request that exhausted its deliveries: fail the task's summary with the last error.

    If no delivery reached the summarizer (it was down), the summary is filed under the key this
    process's summarizer settings give, as the summarizer would have filed it."""
    fields = {"task_id": request.task_id}
    task = runtime.ledger.task(request.task_id)
    article = _readable_article(task)
    if task is None or article is None:
        log(logger, logging.WARNING, "dead summarize request dropped: no readable article", **fields)
        return Delivery(True, "no readable article")
    summarizer = runtime.summarizer
    if task.summary_key:
        key = task.summary_key
    else:
        text_sha256 = (
            article.meta.get("text_sha256")
            or hashlib.sha256(runtime.store.get(article.meta["extras"]["txt"])).hexdigest()
        )
        key = cache_key(text_sha256, summarizer.model_id, summarizer.prompt_version)
    summary = runtime.summaries.get(key)
    last = summary.error if summary is not None and summary.status != "success" else None
    error = f"undeliverable after {deliveries} delivery attempts" + (f"; last error: {last}" if last else "")
    failed = runtime.summaries.fail_undelivered(
        request.task_id, key, error, model=summarizer.model_id, prompt_version=summarizer.prompt_version
    )
    _sync_every_task_showing(runtime, key)
    log(logger, logging.ERROR, "summary dead letter recorded", marked_failed=failed, error=error, **fields)
    return Delivery(True, "dead-lettered")


def _sync_every_task_showing(runtime: Worker, cache_key: str) -> None:
    """A summary changed: every task showing it (the same article, captured more than once) has a new document."""
    for task_id in runtime.summaries.tasks_showing(cache_key):
        runtime.replica.sync(task_id)


def _readable_article(task: Task | None) -> Artifact | None:
    article = task.artifact("readability") if task else None
    return article if article is not None and article.status == "success" else None


def provider_of(model: str) -> str:
    """The provider part of a model id ("openai:gpt-4o-mini" -> "openai"): a bounded metric attribute."""
    return model.split(":", 1)[0]


def record_summary(summary: Summary) -> None:
    provider = {"provider": provider_of(summary.model)}
    SUMMARIES.add(1, {**provider, "outcome": "success"})
    SUMMARY_TOKENS.add(summary.tokens_in, {**provider, "direction": "in"})
    SUMMARY_TOKENS.add(summary.tokens_out, {**provider, "direction": "out"})
    SUMMARY_DURATION.record(summary.duration_ms / 1000, provider)
