from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from htbase.config import Settings
from tests.functions.summarizer.stub_llm import StubLLM


@pytest.fixture
def stub() -> Iterator[StubLLM]:
    server = StubLLM()
    yield server
    server.close()


@pytest.fixture
def stub_b() -> Iterator[StubLLM]:
    server = StubLLM()
    yield server
    server.close()


def llm_settings(stub: StubLLM, **changes: Any) -> Settings:
    """Settings for an OpenAI-compatible provider at the stub; no rate limit unless asked."""
    values: dict[str, Any] = dict(
        llm_providers=("openai",),
        llm_base_url=stub.url,
        llm_model="stub-model",
        llm_api_key="sk-test",
        llm_timeout_s=2.0,
        llm_requests_per_minute=0,
    )
    return Settings().with_(**{**values, **changes})
