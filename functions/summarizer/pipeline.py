"""The summarizer a process builds once: the provider chain from settings, and the LLM path.

An article that fits the model's context is summarized in one call. A longer one
is cut into chunks; each chunk becomes notes (map, a few at a time), and the
notes become the summary (reduce). Notes too long for one reduce call are
condensed the same way first. The summary JSON is parsed, mended if cut off,
validated, and re-asked for a bounded number of times.

A summary has one time budget (``SUMMARY_TIMEOUT``) for the whole chain, under
the push's ack deadline: a model call that its own timeout could carry past the
budget is not started, and the chain falls back to its next step.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TypeVar

from functions.summarizer.chain import Chain, CircuitBreaker, GuardedProvider, RateLimiter, Step
from functions.summarizer.chunker import ApproxTokenCounter, TokenCounter, chunk_text, count_messages
from functions.summarizer.errors import SummaryFailed, SummaryParseError
from functions.summarizer.extractive import ExtractiveSummarizer
from functions.summarizer.languages import detect_language
from functions.summarizer.parser import parse_summary
from functions.summarizer.prompts import (
    PROMPT_VERSION,
    Message,
    map_messages,
    reduce_messages,
    single_pass_messages,
    with_correction,
)
from functions.summarizer.providers import Completion, OpenAICompatibleProvider, Provider, TgiProvider
from functions.summarizer.schema import Summary, require_article_text
from htbase.config import ConfigError, Settings
from infra.telemetry import TRACER

OPENAI_BASE_URL = "https://api.openai.com/v1"
PROVIDERS = ("openai", "tgi", "extractive")
MIN_CONTEXT_TOKENS = 1024
MAX_REASKS = 2  # after the first reply: three tries in all
MAP_CONCURRENCY = 4  # the rate limiter still paces them
MAX_CONDENSE_ROUNDS = 3
_CORRECTION_RESERVE = 80  # tokens for the note with_correction() adds on a re-ask
_LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
T = TypeVar("T")
R = TypeVar("R")
# When the summary being made must be done (time.monotonic()); set by Summarizer.summarize.
_deadline: ContextVar[float] = ContextVar("summary_deadline", default=math.inf)


def cache_key(text_sha256: str, model_id: str, prompt_version: str) -> str:
    """The summary's identity: the same text, model and prompt always give the same summary."""
    return hashlib.sha256(json.dumps([text_sha256, model_id, prompt_version]).encode()).hexdigest()


class Summarizer:
    """Build once per process: the rate limiters and circuit breakers live here.

    ``model_id`` and ``prompt_version`` are those of the first provider in the
    chain (what the cache key should name); ``Summary.model`` says which one
    actually wrote a summary.
    """

    def __init__(self, settings: Settings, steps: Sequence[Step] | None = None) -> None:
        self.steps = list(steps) if steps is not None else [build_step(n, settings) for n in settings.llm_providers]
        if not self.steps:
            raise ConfigError("LLM_PROVIDER names no provider")
        self._chain = Chain(self.steps)
        self.timeout_s = settings.summary_timeout_s

    @property
    def model_id(self) -> str:
        return self.steps[0].model_id

    @property
    def prompt_version(self) -> str:
        return self.steps[0].prompt_version

    def summarize(self, text: str, title: str = "", language: str = "", *, may_retry_later: bool = True) -> Summary:
        """A validated summary, or ``RetryLater`` / ``SummaryFailed`` (see chain.py)."""
        started = time.monotonic()
        require_article_text(text)  # before any provider is called
        budget = _deadline.set(started + self.timeout_s)
        try:
            with TRACER.start_as_current_span("summarize", attributes={"text_chars": len(text)}) as span:
                summary = self._chain.summarize(text, title, language, may_retry_later=may_retry_later)
                span.set_attributes(
                    {"model": summary.model, "tokens_in": summary.tokens_in, "tokens_out": summary.tokens_out}
                )
        finally:
            _deadline.reset(budget)
        return replace(summary, duration_ms=round((time.monotonic() - started) * 1000))


def build_step(name: str, settings: Settings) -> Step:
    """One ``LLM_PROVIDER`` entry as a chain step; ``ConfigError`` for what cannot work."""
    if name == "extractive":
        return ExtractiveSummarizer()
    if name == "openai":
        if not settings.llm_model:
            raise ConfigError("LLM_PROVIDER=openai needs LLM_MODEL")
        provider: Provider = OpenAICompatibleProvider(
            settings.llm_base_url or OPENAI_BASE_URL, settings.llm_model, settings.llm_api_key, settings.llm_timeout_s
        )
    elif name == "tgi":
        if not settings.llm_base_url:
            raise ConfigError("LLM_PROVIDER=tgi needs LLM_BASE_URL")
        provider = TgiProvider(settings.llm_base_url, settings.llm_timeout_s, settings.llm_model, settings.llm_api_key)
    else:
        raise ConfigError(f"LLM_PROVIDER has unknown provider {name!r}; known: {', '.join(PROVIDERS)}")
    return llm_step(provider, settings)


def llm_step(provider: Provider, settings: Settings) -> LLMSummarizer:
    """``provider`` behind its own rate limiter and circuit breaker, as a chain step."""
    if settings.llm_context_tokens < MIN_CONTEXT_TOKENS:
        raise ConfigError(f"LLM_CONTEXT_TOKENS must be at least {MIN_CONTEXT_TOKENS}")
    guarded = GuardedProvider(
        provider,
        RateLimiter(settings.llm_requests_per_minute),
        CircuitBreaker(settings.llm_breaker_failures, settings.llm_breaker_cooldown_s),
    )
    return LLMSummarizer(guarded, settings.llm_context_tokens, call_timeout_s=settings.llm_timeout_s)


@dataclass
class _Run:
    """One summary in the making: its deadline, and token totals added to from the map threads."""

    deadline: float
    tokens_in: int = 0
    tokens_out: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, completion: Completion) -> None:
        with self.lock:
            self.tokens_in += completion.tokens_in
            self.tokens_out += completion.tokens_out


class LLMSummarizer:
    """A chain step that summarizes with one provider: single pass or map-reduce."""

    offline = False
    prompt_version = PROMPT_VERSION

    def __init__(
        self,
        provider: Provider,
        context_tokens: int,
        counter: TokenCounter | None = None,
        *,
        call_timeout_s: float = 0.0,
    ) -> None:
        self.provider = provider
        self.call_timeout_s = call_timeout_s  # the longest one model call may take
        self.name, self.model_id = provider.name, provider.model_id
        self.context_tokens = context_tokens
        self.counter = counter or ApproxTokenCounter()
        # Room for the reply: a whole summary JSON needs ~600 tokens, notes ~200.
        self.summary_max_tokens = min(1024, context_tokens // 4)
        self.notes_max_tokens = min(400, context_tokens // 8)

    def summarize(self, text: str, title: str, language: str) -> Summary:
        started = time.monotonic()
        run = _Run(_deadline.get())
        single = single_pass_messages(text, title, language)
        if self._fits(single, self.summary_max_tokens + _CORRECTION_RESERVE):
            chunks = 1
            fields = self._summary(single, run)
        else:
            pieces = chunk_text(text, self._chunk_budget(title, language), self.counter)
            chunks = len(pieces)
            notes = self._condense(self._notes(pieces, title, language, run), title, language, run)
            fields = self._summary(reduce_messages(notes, title, language), run)
        model_language = fields["language"] if _LANGUAGE_CODE.match(fields["language"]) else ""
        return Summary.build(
            fields,
            language=language or model_language or detect_language(text),
            model=self.model_id,
            prompt_version=PROMPT_VERSION,
            tokens_in=run.tokens_in,
            tokens_out=run.tokens_out,
            duration_ms=round((time.monotonic() - started) * 1000),
            chunks=chunks,
        )

    def _call(self, messages: list[Message], max_tokens: int, run: _Run) -> Completion:
        if time.monotonic() + self.call_timeout_s > run.deadline:
            raise SummaryFailed(
                "the summary's time budget (SUMMARY_TIMEOUT) leaves no time for another model call", transient=True
            )
        completion = self.provider.complete(messages, max_tokens)
        run.add(completion)
        return completion

    def _fits(self, messages: list[Message], reply_tokens: int) -> bool:
        return count_messages(messages, self.counter) + reply_tokens <= self.context_tokens

    def _chunk_budget(self, title: str, language: str) -> int:
        frame = count_messages(map_messages("", title, language, 999, 999), self.counter)
        return self.context_tokens - frame - self.notes_max_tokens

    def _summary(self, messages: list[Message], run: _Run) -> dict:
        """Validated fields from the model, re-asking on unusable replies; ``SummaryFailed`` after that."""
        request = messages
        for _ in range(1 + MAX_REASKS):
            reply = self._call(request, self.summary_max_tokens, run).text
            try:
                return parse_summary(reply)
            except SummaryParseError as exc:
                reason = exc.reason
                request = with_correction(messages, reason)
        raise SummaryFailed(f"no usable summary after {1 + MAX_REASKS} replies: {reason}", reply)

    def _notes(self, pieces: list[str], title: str, language: str, run: _Run) -> list[str]:
        def note(numbered: tuple[int, str]) -> str:
            part, piece = numbered
            messages = map_messages(piece, title, language, part, len(pieces))
            return self._call(messages, self.notes_max_tokens, run).text.strip()

        notes = [n for n in _parallel(note, list(enumerate(pieces, 1))) if n]
        if not notes:
            raise SummaryFailed("the model wrote no notes on any part of the article")
        return notes

    def _condense(self, notes: list[str], title: str, language: str, run: _Run) -> list[str]:
        """Notes small enough for one reduce call: notes on groups of notes, as often as needed."""
        rounds = 0
        while not self._fits(reduce_messages(notes, title, language), self.summary_max_tokens + _CORRECTION_RESERVE):
            if rounds == MAX_CONDENSE_ROUNDS:
                raise SummaryFailed(f"the article is too long to summarize in {self.context_tokens} context tokens")
            groups = chunk_text("\n\n".join(notes), self._chunk_budget(title, language), self.counter)
            notes = self._notes(groups, title, language, run)
            rounds += 1
        return notes


def _parallel(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``fn`` over ``items`` a few at a time, results in order; the first error cancels the rest."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    pool = ThreadPoolExecutor(max_workers=min(MAP_CONCURRENCY, len(items)), thread_name_prefix="summarize-map")
    context = contextvars.copy_context()  # each call runs in a copy: its spans join the summary's trace
    try:
        return list(pool.map(lambda item: context.copy().run(fn, item), items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
