"""One summary delivery: read the article text, summarize it once, record the result.

The summary's key hashes the text's sha256, the model id and the prompt
version, so the same article is never sent to the same model twice unless a
client forces it.
"""
from __future__ import annotations

import hashlib
import logging

from functions.deliveries import Delivery
from functions.summarizer.errors import RetryLater, SummaryFailed
from functions.summarizer.pipeline import cache_key
from htbase.logs import log
from htbase.messages import SummarizeRequest
from functions.worker import Worker

logger = logging.getLogger("htbase.summarize")


def summarize(runtime: Worker, request: SummarizeRequest, delivery_attempt: int | None = None) -> Delivery:
    ledger, fields = runtime.ledger, {"task_id": request.task_id}
    task = ledger.task(request.task_id)
    article = task.artifact("readability") if task else None
    if article is None or article.status != "success":
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
        log(logger, logging.INFO, "summary reused", cache_key=key, **fields)
        return Delivery(True, "cached")

    # On the last delivery a rate-limited chain falls back rather than asking for another.
    last_try = delivery_attempt is not None and delivery_attempt >= runtime.settings.max_attempts
    try:
        summary = summarizer.summarize(text, title=article.meta.get("title") or "",
                                       language=article.meta.get("language") or "", may_retry_later=not last_try)
    except RetryLater as exc:
        log(logger, logging.INFO, "summary rate limited; asking for redelivery", retry_after_s=exc.retry_after_s,
            **fields)
        return Delivery(False, str(exc), retry_after_s=exc.retry_after_s)
    except SummaryFailed as exc:
        if exc.transient:
            return Delivery(False, exc.reason)
        runtime.summaries.save(request.task_id, key, status="failed", error=exc.reason, raw_text=exc.raw_text or None,
                            model=summarizer.model_id, prompt_version=summarizer.prompt_version)
        runtime.replica.sync(request.task_id)
        log(logger, logging.WARNING, "summary failed", error=exc.reason, **fields)
        return Delivery(True, "failed")
    # Filed under the model that wrote it: a fallback's summary never poses as the primary model's,
    # so a later request tries the primary again.
    written_by = cache_key(text_sha256, summary.model, summary.prompt_version)
    runtime.summaries.save(request.task_id, written_by, status="success", result=summary.to_dict(),
                        model=summary.model, prompt_version=summary.prompt_version)
    runtime.replica.sync(request.task_id)
    log(logger, logging.INFO, "summary stored", model=summary.model, chunks=summary.chunks,
        duration_ms=summary.duration_ms, **fields)
    return Delivery(True, "stored")
