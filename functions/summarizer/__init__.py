"""Article summaries: an LLM provider chain with an offline extractive default.

The push handler needs only this: build ``Summarizer(settings)`` once per
process, key the result with ``cache_key(text_sha256, summarizer.model_id,
summarizer.prompt_version)``, call ``summarize()`` and store ``to_dict()``;
answer ``RetryLater`` with a 429 and record ``SummaryFailed`` (keeping its
``raw_text``) unless it is ``transient``.
"""

from functions.summarizer.errors import RetryLater, SummaryFailed
from functions.summarizer.pipeline import Summarizer, cache_key
from functions.summarizer.schema import Summary

__all__ = ["RetryLater", "Summarizer", "Summary", "SummaryFailed", "cache_key"]
