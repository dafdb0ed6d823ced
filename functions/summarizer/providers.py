"""LLM providers behind one small interface: messages in, text and token counts out.

``OpenAICompatibleProvider`` speaks chat completions (OpenAI, vLLM, Ollama and
TGI all serve it under ``/v1``); ``TgiProvider`` speaks TGI's native
``/generate``. HTTP failures become three errors the chain acts on:
``RateLimited`` (429: wait), ``ProviderUnavailable`` (no connection, timeout,
5xx: try the next provider, count towards the circuit breaker) and
``ProviderError`` (any other 4xx or a nonsense response: a retry will not help).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import requests
from opentelemetry.trace import SpanKind
from requests.structures import CaseInsensitiveDict

from functions.summarizer.chunker import ApproxTokenCounter, count_messages
from functions.summarizer.errors import ProviderError, ProviderUnavailable, RateLimited
from functions.summarizer.prompts import Message
from infra.telemetry import TRACER, outgoing_headers

DEFAULT_RETRY_AFTER_S = 30.0  # a 429 that does not say how long to wait
_COUNTER = ApproxTokenCounter()  # for servers that do not report usage


@dataclass(frozen=True)
class Completion:
    text: str
    tokens_in: int
    tokens_out: int
    model: str


class Provider(Protocol):
    name: str
    model_id: str  # stable id for cache keys and the summary's ``model``, e.g. "openai:gpt-4o-mini"

    def complete(self, messages: list[Message], max_tokens: int) -> Completion: ...


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 60.0) -> None:
        self.model_id = f"openai:{model}"
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model, self._timeout = model, timeout
        self._headers = _auth(api_key)

    def complete(self, messages: list[Message], max_tokens: int) -> Completion:
        body = _post_json(
            self._url,
            {"model": self._model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.2},
            self._headers,
            self._timeout,
        )
        try:
            text = body["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ProviderError(f"{self._url}: no choices[0].message.content in {str(body)[:200]}") from None
        usage = body.get("usage") or {}
        return Completion(
            text=text,
            tokens_in=usage.get("prompt_tokens") or count_messages(messages, _COUNTER),
            tokens_out=usage.get("completion_tokens") or _COUNTER.count(text),
            model=body.get("model") or self._model,
        )


class TgiProvider:
    """HuggingFace text-generation-inference, native API.

    ``/generate`` takes one prompt string, so messages are rendered in a plain
    role-prefixed format. TGI's own ``/v1/chat/completions`` applies the model's
    chat template and is the better choice where available (``LLM_PROVIDER=openai``).
    """

    name = "tgi"

    def __init__(self, base_url: str, timeout: float = 60.0, model: str = "", api_key: str = "") -> None:
        self.model_id = f"tgi:{model}" if model else "tgi"
        self._url = base_url.rstrip("/") + "/generate"
        self._model, self._timeout = model, timeout
        self._headers = _auth(api_key)

    def complete(self, messages: list[Message], max_tokens: int) -> Completion:
        prompt = render_prompt(messages)
        body = _post_json(
            self._url,
            {
                "inputs": prompt,
                "parameters": {"max_new_tokens": max_tokens, "details": True, "return_full_text": False},
            },
            self._headers,
            self._timeout,
        )
        if isinstance(body, list) and body:  # the hosted Inference API wraps the answer in a list
            body = body[0]
        if not isinstance(body, dict) or not isinstance(body.get("generated_text"), str):
            raise ProviderError(f"{self._url}: no generated_text in {str(body)[:200]}")
        text = body["generated_text"]
        details = body.get("details") or {}
        return Completion(
            text=text,
            tokens_in=_COUNTER.count(prompt),
            tokens_out=details.get("generated_tokens") or _COUNTER.count(text),
            model=self._model or "tgi",
        )


def render_prompt(messages: list[Message]) -> str:
    turns = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
    return f"{turns}\n\nAssistant:"


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float:
    """Seconds to wait from ``retry-after-ms`` (OpenAI) or ``Retry-After`` (seconds or an HTTP date)."""
    headers = CaseInsensitiveDict(headers)
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except ValueError:
        pass
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return DEFAULT_RETRY_AFTER_S
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_RETRY_AFTER_S
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _post_json(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float) -> Any:
    with TRACER.start_as_current_span("POST", kind=SpanKind.CLIENT, attributes={"url.full": url}) as span:
        try:
            response = requests.post(url, json=payload, headers=outgoing_headers(headers), timeout=timeout)
        except requests.RequestException as exc:  # refused, reset, DNS, timeout
            raise ProviderUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
        span.set_attribute("http.response.status_code", response.status_code)
    status = response.status_code
    if status == 429:
        raise RateLimited(parse_retry_after(response.headers), f"{url}: HTTP 429")
    if status >= 500 or status == 408:
        raise ProviderUnavailable(f"{url}: HTTP {status}: {response.text[:200]}")
    if status >= 400:
        raise ProviderError(f"{url}: HTTP {status}: {response.text[:200]}")
    try:
        return response.json()
    except ValueError:
        raise ProviderError(f"{url}: response is not JSON: {response.text[:200]}") from None
