"""The two wire protocols and how HTTP failures are classified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from functions.summarizer import Summarizer
from functions.summarizer.errors import ProviderError, ProviderUnavailable, RateLimited
from functions.summarizer.providers import (
    DEFAULT_RETRY_AFTER_S,
    OpenAICompatibleProvider,
    TgiProvider,
    parse_retry_after,
)
from tests.functions.summarizer import articles
from tests.functions.summarizer.conftest import llm_settings
from tests.functions.summarizer.stub_llm import GOOD_SUMMARY, Reply, chat, refused_url, tgi

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]


def test_openai_compatible_request_and_usage(stub):
    stub.script(chat("hi", prompt_tokens=11, completion_tokens=2, model="stub-model-2024"))
    provider = OpenAICompatibleProvider(stub.url + "/", "stub-model", "sk-key", timeout=2)

    completion = provider.complete(MESSAGES, max_tokens=50)

    assert (completion.text, completion.tokens_in, completion.tokens_out, completion.model) == (
        "hi",
        11,
        2,
        "stub-model-2024",
    )
    call = stub.calls[0]
    assert call.path == "/v1/chat/completions" and call.headers["Authorization"] == "Bearer sk-key"
    assert call.body["messages"] == MESSAGES and call.body["max_tokens"] == 50
    assert provider.name == "openai" and provider.model_id == "openai:stub-model"


def test_openai_compatible_without_usage_estimates_tokens(stub):
    stub.script(Reply(body={"choices": [{"message": {"content": "hello there"}}]}))

    completion = OpenAICompatibleProvider(stub.url, "m", timeout=2).complete(MESSAGES, 50)

    assert completion.tokens_in > 0 and completion.tokens_out > 0 and completion.model == "m"
    assert "Authorization" not in stub.calls[0].headers  # no key, no header (local servers)


def test_tgi_native_protocol(stub):
    stub.script(tgi("generated words", generated_tokens=7))
    provider = TgiProvider(stub.base, timeout=2, model="mistral-7b")

    completion = provider.complete(MESSAGES, max_tokens=64)

    assert (completion.text, completion.tokens_out, completion.model) == ("generated words", 7, "mistral-7b")
    call = stub.calls[0]
    assert call.path == "/generate"
    assert call.body["parameters"]["max_new_tokens"] == 64 and call.body["parameters"]["details"] is True
    assert call.body["inputs"].startswith("System: Be brief.\n\nUser: Say hi.") and call.body["inputs"].endswith(
        "Assistant:"
    )
    assert provider.model_id == "tgi:mistral-7b"


def test_tgi_list_answer_of_the_hosted_api(stub):
    stub.script(Reply(body=[{"generated_text": "listed"}]))

    assert TgiProvider(stub.base, timeout=2).complete(MESSAGES, 10).text == "listed"


def test_tgi_as_a_summarizer_from_settings(stub):
    stub.script(tgi(json.dumps(GOOD_SUMMARY)))
    summarizer = Summarizer(llm_settings(stub, llm_providers=("tgi",), llm_base_url=stub.base, llm_model=""))

    summary = summarizer.summarize(articles.ENGLISH)

    assert summary.model == "tgi" and summary.tokens_out == 42 and stub.calls[0].path == "/generate"


@pytest.mark.parametrize(
    "reply, error",
    [
        (Reply(429, {}, {"Retry-After": "7"}), RateLimited),
        (Reply(500, {"error": "boom"}), ProviderUnavailable),
        (Reply(502, "Bad Gateway"), ProviderUnavailable),
        (Reply(404, {"error": "no such model"}), ProviderError),
        (Reply(200, "this is not json"), ProviderError),
        (Reply(200, {"choices": []}), ProviderError),
    ],
)
def test_http_outcomes_are_classified(stub, reply, error):
    stub.script(reply)
    with pytest.raises(error) as raised:
        OpenAICompatibleProvider(stub.url, "m", timeout=2).complete(MESSAGES, 10)
    assert type(raised.value) is error
    if error is RateLimited:
        assert raised.value.retry_after_s == 7


def test_refused_connection_and_timeout_are_unavailable(stub):
    with pytest.raises(ProviderUnavailable, match="ConnectionError"):
        OpenAICompatibleProvider(refused_url(), "m", timeout=2).complete(MESSAGES, 10)
    stub.script(Reply(delay=0.6, body={}))
    with pytest.raises(ProviderUnavailable, match="Timeout"):
        TgiProvider(stub.base, timeout=0.2).complete(MESSAGES, 10)


def test_retry_after_forms():
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after({"Retry-After": "12"}) == 12
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"Retry-After-Ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": format_datetime(now + timedelta(seconds=90), usegmt=True)}, now=now) == 90
    assert parse_retry_after({"Retry-After": format_datetime(now - timedelta(seconds=5), usegmt=True)}, now=now) == 0
    assert parse_retry_after({}) == parse_retry_after({"Retry-After": "soon"}) == DEFAULT_RETRY_AFTER_S
