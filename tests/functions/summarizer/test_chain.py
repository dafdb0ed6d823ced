"""Fallback, circuit breaker, rate limiting and 429 handling, against real HTTP stubs."""

from __future__ import annotations

import threading
import time

import pytest

from functions.summarizer import RetryLater, Summarizer, SummaryFailed
from functions.summarizer.chain import CircuitBreaker, RateLimiter
from functions.summarizer.errors import RateLimited
from functions.summarizer.extractive import MODEL_ID as EXTRACTIVE
from functions.summarizer.extractive import ExtractiveSummarizer
from functions.summarizer.pipeline import llm_step
from functions.summarizer.providers import OpenAICompatibleProvider
from tests.functions.summarizer import articles
from tests.functions.summarizer.conftest import llm_settings
from tests.functions.summarizer.stub_llm import Reply, good_chat, refused_url
from tests.helpers import wait_for

ARTICLE = articles.ENGLISH


def test_timeout_falls_back_to_the_next_provider(stub):
    stub.script(Reply(delay=30.0, body={}))  # answers long after the client gave up
    settings = llm_settings(stub, llm_providers=("openai", "extractive"), llm_timeout_s=0.2)

    started = time.monotonic()
    summary = Summarizer(settings).summarize(ARTICLE)

    assert summary.model == EXTRACTIVE and len(stub.calls) == 1
    assert time.monotonic() - started < 15  # far from the reply's 30 s: the client did not wait for it


def test_timeout_of_the_only_provider_is_a_transient_failure(stub):
    stub.script(Reply(delay=1.0, body={}))

    with pytest.raises(SummaryFailed) as failure:
        Summarizer(llm_settings(stub, llm_timeout_s=0.2)).summarize(ARTICLE)

    assert failure.value.transient and "Timeout" in failure.value.reason


def test_provider_a_refusing_connections_hands_over_to_provider_b(stub):
    settings = llm_settings(stub)
    a = llm_step(OpenAICompatibleProvider(refused_url(), "model-a", timeout=2), settings)
    b = llm_step(OpenAICompatibleProvider(stub.url, "model-b", timeout=2), settings)
    stub.script(good_chat())

    summary = Summarizer(settings, steps=[a, b]).summarize(ARTICLE)

    assert summary.model == "openai:model-b" and len(stub.calls) == 1
    assert stub.calls[0].body["model"] == "model-b"


@pytest.mark.parametrize("status, transient", [(500, True), (503, True), (400, False), (401, False)])
def test_http_errors_fall_back_and_say_whether_retrying_could_help(stub, status, transient):
    stub.respond = lambda call: Reply(status, {"error": {"message": "nope"}})

    assert Summarizer(llm_settings(stub, llm_providers=("openai", "extractive"))).summarize(ARTICLE).model == EXTRACTIVE
    with pytest.raises(SummaryFailed) as failure:
        Summarizer(llm_settings(stub)).summarize(ARTICLE)
    assert failure.value.transient is transient and f"HTTP {status}" in failure.value.reason


def test_circuit_opens_after_repeated_failures_and_recloses_after_the_cool_down(stub):
    stub.respond = lambda call: Reply(500, {"error": "down"})
    summarizer = Summarizer(
        llm_settings(stub, llm_providers=("openai", "extractive"), llm_breaker_failures=2, llm_breaker_cooldown_s=1.0)
    )

    for _ in range(5):
        assert summarizer.summarize(ARTICLE).model == EXTRACTIVE
    assert len(stub.calls) == 2  # skipped without a call once open

    breaker = summarizer.steps[0].provider.breaker
    wait_for(lambda: not breaker.is_open, 30, "the cool-down")
    stub.respond = lambda call: good_chat()
    assert summarizer.summarize(ARTICLE).model == "openai:stub-model"  # the trial call succeeds
    assert summarizer.summarize(ARTICLE).model == "openai:stub-model"
    assert len(stub.calls) == 4


def test_half_open_circuit_lets_one_trial_through_and_reopens_if_it_fails():
    now = [0.0]
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow() and not breaker.is_open
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # everyone else waits for it
    breaker.record_failure()
    now[0] = 15.0
    assert not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.allow() and breaker.allow() and not breaker.is_open


def test_rate_limit_is_shared_by_concurrent_deliveries(stub):
    stub.respond = lambda call: good_chat()
    summarizer = Summarizer(llm_settings(stub, llm_requests_per_minute=300))  # one request per 0.2 s
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            summarizer.summarize(ARTICLE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    arrivals = sorted(call.at for call in stub.calls)
    assert len(arrivals) == 4
    # Sent 0.2 s apart; arrival times carry some scheduling jitter.
    assert all(at - arrivals[0] >= 0.2 * k - 0.1 for k, at in enumerate(arrivals)), arrivals
    assert arrivals[-1] - arrivals[0] >= 0.5


def test_a_long_local_wait_is_reported_not_slept(stub):
    stub.respond = lambda call: good_chat()
    summarizer = Summarizer(llm_settings(stub, llm_requests_per_minute=1))
    summarizer.summarize(ARTICLE)

    started = time.monotonic()
    with pytest.raises(RetryLater) as retry:
        summarizer.summarize(ARTICLE)

    assert 59 < retry.value.retry_after_s <= 60 and time.monotonic() - started < 15  # not the minute
    assert len(stub.calls) == 1


def test_rate_limiter_spaces_requests_and_honours_a_hold():
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(per_minute=60, clock=lambda: now[0], sleep=sleep)
    limiter.acquire(max_wait_s=5)
    limiter.acquire(max_wait_s=5)
    assert slept == [1.0]
    limiter.hold(30)
    with pytest.raises(RateLimited) as limited:
        limiter.acquire(max_wait_s=5)
    assert limited.value.retry_after_s == 30


def test_429_with_a_short_pause_is_waited_out_in_place(stub):
    stub.script(Reply(429, {"error": "slow down"}, {"retry-after-ms": "150"}), good_chat())

    summary = Summarizer(llm_settings(stub)).summarize(ARTICLE)

    assert summary.model == "openai:stub-model" and len(stub.calls) == 2  # not bounced as RetryLater
    assert stub.calls[1].at - stub.calls[0].at >= 0.15


def test_429_then_429_again_stops_hammering_the_same_process(stub):
    stub.respond = lambda call: Reply(429, {"error": "slow down"}, {"Retry-After": "90"})
    summarizer = Summarizer(llm_settings(stub))

    for _ in range(3):
        with pytest.raises(RetryLater) as retry:
            summarizer.summarize(ARTICLE)
        assert 85 < retry.value.retry_after_s <= 90

    assert len(stub.calls) == 1  # later deliveries are held back locally until the pause is over


def test_429_in_a_chain_with_extractive_asks_for_a_retry_rather_than_settle(stub):
    stub.respond = lambda call: Reply(429, {"error": "slow down"}, {"Retry-After": "45"})
    summarizer = Summarizer(llm_settings(stub, llm_providers=("openai", "extractive")))

    with pytest.raises(RetryLater) as retry:
        summarizer.summarize(ARTICLE)
    assert retry.value.retry_after_s == 45

    # The last delivery attempt takes the offline summary rather than none.
    assert summarizer.summarize(ARTICLE, may_retry_later=False).model == EXTRACTIVE


def test_429_from_a_then_b_answers(stub, stub_b):
    settings = llm_settings(stub)
    a = llm_step(OpenAICompatibleProvider(stub.url, "model-a", timeout=2), settings)
    b = llm_step(OpenAICompatibleProvider(stub_b.url, "model-b", timeout=2), settings)
    stub.script(Reply(429, {"error": "slow down"}, {"Retry-After": "45"}))
    stub_b.script(good_chat())

    summary = Summarizer(settings, steps=[a, b, ExtractiveSummarizer()]).summarize(ARTICLE)

    assert summary.model == "openai:model-b" and len(stub.calls) == len(stub_b.calls) == 1


def test_429_without_a_way_to_wait_is_a_transient_failure(stub):
    stub.respond = lambda call: Reply(429, {"error": "slow down"}, {"Retry-After": "45"})

    with pytest.raises(SummaryFailed) as failure:
        Summarizer(llm_settings(stub)).summarize(ARTICLE, may_retry_later=False)

    assert failure.value.transient and "429" in failure.value.reason
