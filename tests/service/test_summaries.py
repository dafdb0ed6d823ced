"""Summaries through the whole pipeline: triggered by the readable article, cached, re-requested, forced."""

from __future__ import annotations

import pytest

from service.embedded import EmbeddedService
from tests.functions.summarizer.stub_llm import StubLLM, good_chat

API = "/api/v2"


def archive(service, url: str, archivers=("readability",)) -> str:
    client = service.api.test_client()
    task_id = client.post(f"{API}/archive", json={"url": url, "archivers": list(archivers)}).get_json()["task_id"]
    assert service.dispatcher.wait_idle(90)
    return task_id


def summary_of(service, task_id: str):
    return service.api.test_client().get(f"{API}/summaries/{task_id}")


@pytest.fixture
def stub():
    server = StubLLM()
    server.respond = lambda call: good_chat()
    yield server
    server.close()


def test_the_default_extractive_summarizer_summarizes_every_readable_article(embedded_settings, test_site):
    with EmbeddedService(embedded_settings) as service:
        task_id = archive(service, test_site.url("/article.html"))
        response = summary_of(service, task_id)
        assert response.status_code == 200, response.get_json()
        summary = response.get_json()
        assert summary["status"] == "success" and summary["model"] == "extractive-v1"
        assert 0 < len(summary["lede"].split()) <= 30 and len(summary["summary"].split()) <= 150
        assert 3 <= len(summary["key_points"]) <= 7 and summary["tags"] and summary["language"] == "en"
        assert "Varne" in summary["summary"] and "SPONSORED" not in summary["summary"]
        task = service.api.test_client().get(f"{API}/tasks/{task_id}").get_json()
        assert task["summary_url"] == f"{API}/summaries/{task_id}"


def test_an_llm_summary_is_made_once_then_reused_until_forced(embedded_settings, test_site, stub):
    settings = embedded_settings.with_(
        llm_providers=("openai",),
        llm_base_url=stub.url,
        llm_model="stub-model",
        llm_requests_per_minute=0,
        llm_timeout_s=5,
    )
    with EmbeddedService(settings) as service:
        client = service.api.test_client()
        task_id = archive(service, test_site.url("/article.html"))
        summary = summary_of(service, task_id).get_json()
        assert summary["status"] == "success" and summary["model"] == "openai:stub-model"
        assert summary["lede"].startswith("The city council approved")
        assert len(stub.calls) == 1

        response = client.post(f"{API}/summarize/{task_id}")
        assert response.status_code == 202 and response.get_json()["summary_url"] == f"{API}/summaries/{task_id}"
        assert service.dispatcher.wait_idle(30)
        assert len(stub.calls) == 1, "a re-request of the same article must not call the model again"

        # The same article captured again by another task: the summary is found, not remade.
        again = archive(service, test_site.url("/article.html?again"))
        assert summary_of(service, again).get_json()["lede"] == summary["lede"]
        assert len(stub.calls) == 1

        assert client.post(f"{API}/summarize/{task_id}", json={"force": True}).status_code == 202
        assert service.dispatcher.wait_idle(30)
        assert len(stub.calls) == 2


def test_summary_requests_that_cannot_be_served_get_clear_errors(embedded_settings, test_site):
    with EmbeddedService(embedded_settings.with_(archivers=("readability", "monolith"))) as service:
        client = service.api.test_client()
        no_readability = archive(service, test_site.url("/article.html"), archivers=("monolith",))
        response = client.post(f"{API}/summarize/{no_readability}")
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "no_article"
        not_an_article = archive(service, test_site.url("/no-article.html"))
        response = summary_of(service, not_an_article)
        assert response.status_code == 409 and "no readable article" in response.get_json()["error"]["message"]
        assert client.post(f"{API}/summarize/nope").status_code == 404
        assert client.post(f"{API}/summarize/{no_readability}", json={"force": "yes"}).status_code == 400
