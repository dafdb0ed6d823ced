"""A summary has one time budget (SUMMARY_TIMEOUT) for every model call it makes, under the ack deadline."""

from __future__ import annotations

import time

import pytest

from functions.summarizer import Summarizer, SummaryFailed
from functions.summarizer.extractive import MODEL_ID as EXTRACTIVE
from tests.functions.summarizer import articles
from tests.functions.summarizer.conftest import llm_settings
from tests.functions.summarizer.stub_llm import Reply, chat, good_chat

SLOW_S = 0.6  # each model reply takes this long


def slow_model(call) -> Reply:
    reply = chat("- notes") if call.is_notes else good_chat()
    reply.delay = SLOW_S
    return reply


def budget_settings(stub, providers):
    # A long article: a dozen map calls, four at a time, then a reduce; about 2.4 s in all.
    return llm_settings(
        stub, llm_providers=providers, llm_context_tokens=1024, llm_timeout_s=1.0, summary_timeout_s=2.0
    )


def test_no_model_call_starts_that_could_end_after_the_budget_and_the_chain_falls_back(stub):
    stub.respond = slow_model
    started = time.monotonic()

    summary = Summarizer(budget_settings(stub, ("openai", "extractive"))).summarize(articles.long_article(6000))

    assert summary.model == EXTRACTIVE  # the model path would have taken about 2.4 s
    # The contract: a call starts only while it could still end within the budget (2 s, each call
    # allowed 1 s). The extractive fallback's own time after that is CPU, not a model's wait.
    assert stub.calls and max(c.at for c in stub.calls) - started <= 2.0 - 1.0


def test_with_no_fallback_the_spent_budget_is_a_transient_failure(stub):
    stub.respond = slow_model
    with pytest.raises(SummaryFailed, match="time budget") as failed:
        Summarizer(budget_settings(stub, ("openai",))).summarize(articles.long_article(6000))
    assert failed.value.transient  # a later delivery gets a budget of its own


def test_each_summary_gets_its_own_budget(stub):
    stub.respond = slow_model
    summarizer = Summarizer(budget_settings(stub, ("openai",)))
    for _ in range(2):  # one short article each: one call well within the budget
        assert summarizer.summarize(articles.ENGLISH).model == "openai:stub-model"
