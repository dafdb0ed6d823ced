"""The LLM path end to end against a real OpenAI-compatible HTTP stub."""

from __future__ import annotations

import json
import re

import pytest

from functions.summarizer import RetryLater, Summarizer, SummaryFailed, cache_key
from functions.summarizer.chunker import ApproxTokenCounter, count_messages
from functions.summarizer.extractive import MODEL_ID as EXTRACTIVE
from functions.summarizer.prompts import PROMPT_VERSION
from functions.summarizer.schema import validate_summary_fields
from htbase.config import ConfigError, Settings
from tests.functions.summarizer import articles
from tests.functions.summarizer.conftest import llm_settings
from tests.functions.summarizer.stub_llm import GOOD_SUMMARY, Reply, chat, good_chat


def test_normal_summary_is_one_call_and_valid(stub):
    stub.script(good_chat())
    summarizer = Summarizer(llm_settings(stub))

    summary = summarizer.summarize(articles.ENGLISH, title=articles.ENGLISH_TITLE)

    assert len(stub.calls) == 1
    assert validate_summary_fields(summary.to_dict())
    assert summary.lede == GOOD_SUMMARY["lede"]
    assert summary.tags == ("cycling", "city council", "transport")  # normalized to lowercase
    assert (summary.model, summary.prompt_version) == ("openai:stub-model", PROMPT_VERSION)
    assert (summary.tokens_in, summary.tokens_out, summary.chunks) == (120, 80, 1)
    assert summary.language == "en" and summary.duration_ms >= 0
    call = stub.calls[0]
    assert call.path == "/v1/chat/completions"
    assert call.headers["Authorization"] == "Bearer sk-test"
    assert call.body["model"] == "stub-model" and call.body["max_tokens"] > 0
    assert articles.ENGLISH_TITLE in call.body["messages"][-1]["content"]
    assert summarizer.model_id == "openai:stub-model" and summarizer.prompt_version == PROMPT_VERSION


def test_malformed_json_then_good_takes_two_calls(stub):
    stub.script(chat("Sure! Here is the summary: {lede: The council voted, summary: no quotes}"), good_chat())

    summary = Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert len(stub.calls) == 2
    assert summary.lede == GOOD_SUMMARY["lede"]
    assert "could not be used" in stub.calls[1].body["messages"][-1]["content"]
    assert summary.tokens_in == 240  # both calls are counted


def test_reply_in_fences_with_prose_and_trailing_commas_is_one_call(stub):
    text = json.dumps(GOOD_SUMMARY, indent=1).replace('"\n ]', '",\n ]')
    stub.script(chat(f"Here you go:\n```json\n{text}\n```\nLet me know if you need more."))

    summary = Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert len(stub.calls) == 1 and summary.key_points == tuple(GOOD_SUMMARY["key_points"])


def test_output_cut_off_after_the_key_points_is_repaired_without_a_second_call(stub):
    whole = json.dumps(GOOD_SUMMARY)
    stub.script(chat(whole[: whole.index('"Cycling", "city') + 12]))  # stops inside the second tag

    summary = Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert len(stub.calls) == 1
    assert summary.key_points == tuple(GOOD_SUMMARY["key_points"])
    assert summary.tags == ("cycling",)  # the half-written tag is dropped, not guessed


def test_output_cut_off_in_the_summary_is_asked_again(stub):
    whole = json.dumps(GOOD_SUMMARY)
    stub.script(chat(whole[: whole.index("Shop owners")]), good_chat())

    summary = Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert len(stub.calls) == 2
    assert "cut off" in stub.calls[1].body["messages"][-1]["content"]
    assert summary.summary == GOOD_SUMMARY["summary"]


def test_unusable_replies_fail_after_bounded_retries_with_the_raw_text(stub):
    stub.script(chat("no json 1"), chat("no json 2"), chat('{"lede": "only a lede"}'))

    with pytest.raises(SummaryFailed) as failure:
        Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert len(stub.calls) == 3
    assert failure.value.raw_text == '{"lede": "only a lede"}'
    assert "summary must be a non-empty string" in failure.value.reason
    assert not failure.value.transient


def test_over_long_lede_is_asked_again_with_the_reason(stub):
    stub.script(good_chat(lede=" ".join(["word"] * 31)), good_chat())

    Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert "lede has 31 words; at most 30" in stub.calls[1].body["messages"][-1]["content"]


def test_language_given_by_the_caller_wins(stub):
    stub.script(good_chat(language="English"))

    assert Summarizer(llm_settings(stub)).summarize(articles.GERMAN, language="de").language == "de"


def test_empty_article_fails_clearly_without_calling_anyone(stub):
    summarizer = Summarizer(llm_settings(stub, llm_providers=("openai", "extractive")))
    for text in ("", "   \n\t ", "Just a few words."):
        with pytest.raises(SummaryFailed, match="article has no text to summarize"):
            summarizer.summarize(text)
    assert stub.calls == []


def test_article_far_longer_than_the_context_is_mapped_then_reduced(stub):
    settings = llm_settings(stub, llm_context_tokens=1024)
    stub.respond = lambda call: (
        chat(f"- notes on {call.body['messages'][-1]['content'][:20]}") if call.is_notes else good_chat()
    )
    text = articles.long_article(6000)

    summary = Summarizer(settings).summarize(text, title="Town news")

    maps = [c for c in stub.calls if c.is_notes]
    reduces = [c for c in stub.calls if not c.is_notes]
    assert summary.chunks == len(maps) >= 8
    assert len(reduces) == 1 and reduces[0].at >= max(c.at for c in maps)
    assert "Notes on part 1 of" in reduces[0].body["messages"][-1]["content"]
    counter = ApproxTokenCounter()
    for call in stub.calls:  # every request fits the model's context with room for the reply
        assert count_messages(call.body["messages"], counter) + call.body["max_tokens"] <= 1024
    # Every word of the article went to exactly one map call, in order.
    parts = sorted(
        (int(m[1]), m[2])
        for m in (
            re.search(r"Part (\d+) of \d+:\n(.*)\n\nWrite notes", c.body["messages"][-1]["content"], re.DOTALL)
            for c in maps
        )
    )
    assert [n for n, _ in parts] == list(range(1, len(maps) + 1))
    assert " ".join(piece for _, piece in parts).split() == text.split()
    assert summary.tokens_in == 120 * len(stub.calls)
    assert validate_summary_fields(summary.to_dict())


def test_too_many_notes_are_condensed_before_the_reduce(stub):
    settings = llm_settings(stub, llm_context_tokens=1024)
    long_notes = " ".join(["detail"] * 100)
    stub.respond = lambda call: chat(long_notes) if call.is_notes else good_chat()

    summary = Summarizer(settings).summarize(articles.long_article(6000))

    maps = [c for c in stub.calls if c.is_notes]
    assert len(maps) > summary.chunks  # the extra map calls condensed notes
    assert stub.calls[-1].is_notes is False and validate_summary_fields(summary.to_dict())


def test_cache_key_hashes_text_model_and_prompt_version():
    key = cache_key("a" * 64, "openai:stub-model", PROMPT_VERSION)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == cache_key("a" * 64, "openai:stub-model", PROMPT_VERSION)
    assert (
        len(
            {
                key,
                cache_key("b" * 64, "openai:stub-model", PROMPT_VERSION),
                cache_key("a" * 64, "openai:other", PROMPT_VERSION),
                cache_key("a" * 64, "openai:stub-model", "summary-v2"),
            }
        )
        == 4
    )


def test_extractive_is_the_default_and_needs_no_configuration():
    summarizer = Summarizer(Settings())
    assert (summarizer.model_id, summarizer.prompt_version) == (EXTRACTIVE, "none")
    summary = summarizer.summarize(articles.ENGLISH, title=articles.ENGLISH_TITLE)
    assert summary.model == EXTRACTIVE and validate_summary_fields(summary.to_dict())


def test_chain_and_limits_come_from_the_environment():
    settings = Settings.from_env(
        {
            "LLM_PROVIDER": "openai, tgi,extractive",
            "LLM_BASE_URL": "http://llm:8080/v1",
            "LLM_MODEL": "llama3",
            "LLM_BREAKER_FAILURES": "5",
            "LLM_BREAKER_COOLDOWN": "2.5",
        }
    )
    summarizer = Summarizer(settings)

    assert [step.name for step in summarizer.steps] == ["openai", "tgi", "extractive"]
    assert summarizer.model_id == "openai:llama3" and summarizer.steps[1].model_id == "tgi:llama3"
    assert (settings.llm_breaker_failures, settings.llm_breaker_cooldown_s) == (5, 2.5)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"llm_providers": ("gemini",)}, "unknown provider 'gemini'"),
        ({"llm_providers": ("openai",)}, "needs LLM_MODEL"),
        ({"llm_providers": ("tgi",)}, "needs LLM_BASE_URL"),
        ({"llm_providers": ("openai",), "llm_model": "m", "llm_context_tokens": 512}, "at least 1024"),
        ({"llm_providers": ()}, "names no provider"),
    ],
)
def test_bad_provider_settings_fail_at_start_up(changes, message):
    with pytest.raises(ConfigError, match=message):
        Summarizer(Settings().with_(**changes))


def test_rate_limited_single_provider_asks_for_a_retry(stub):
    stub.script(Reply(429, {"error": "slow down"}, {"Retry-After": "120"}))

    with pytest.raises(RetryLater) as retry:
        Summarizer(llm_settings(stub)).summarize(articles.ENGLISH)

    assert retry.value.retry_after_s == 120 and len(stub.calls) == 1
