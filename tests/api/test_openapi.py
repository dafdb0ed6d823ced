"""The contract: the OpenAPI document is valid, names every route, and the live API keeps to it under fuzzing."""

from __future__ import annotations

import io
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from openapi_spec_validator import validate
from playwright.sync_api import sync_playwright
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from infra.keys import ApiKeys
from tests.api.conftest import API, served

UNDOCUMENTED = {"static", "docs.document", "docs.page", "docs.redoc"}  # the document and its page themselves
EXAMPLES = 6  # per operation and database: some 200 requests each, under a minute on either
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Probes answer a documented 503 while a part is down (here the broker: the dispatcher is stopped).
PROBES = {"/healthz", f"{API}/health", f"{API}/ready"}
# Here no capture ever finishes, so a request that waits for one waits its whole `timeout`: a second at most.
WAITING = {f"{API}/archive/sync"}


def waits_briefly(case):
    if isinstance(case.body, dict) and isinstance(case.body.get("timeout", 1), (int, float)):
        case.body["timeout"] = min(case.body.get("timeout", 1), 1)
    return case


def test_the_document_is_valid_openapi_3_1_and_names_every_route(client, service):
    document = client.get(f"{API}/openapi.json").get_json()
    validate(document)
    assert document["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    for rule in service.api.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED or rule.endpoint.startswith("web."):  # the web page: HTML, not the API
            continue
        path = re.sub(r"<(?:[^<:>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        assert {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}} <= documented, rule.rule


def test_the_document_says_who_may_call_what(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert paths[f"{API}/archive"]["post"]["security"] == [{"bearer": ["write"]}, {"apiKey": ["write"]}]
    assert "429" in paths[f"{API}/archive"]["post"]["responses"]
    assert paths[f"{API}/tasks"]["get"]["security"] == [{"bearer": ["read"]}, {"apiKey": ["read"]}]
    assert paths[f"{API}/keys/{{prefix}}"]["delete"]["security"] == [{"bearer": ["admin"]}, {"apiKey": ["admin"]}]
    assert paths["/healthz"]["get"]["security"] == []
    untag = paths[f"{API}/items/{{item_id}}/tags/{{tag}}"]["delete"]  # undoing a write, deleting no capture
    assert untag["security"] == [{"bearer": ["write"]}, {"apiKey": ["write"]}]
    # The schemas the handlers validate with: the enum of archivers, the id pattern, the batch's bound.
    body = paths[f"{API}/archive/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BatchRequest"}


def test_validation_errors_are_400_in_the_api_shape_never_422(client):
    response = client.post(f"{API}/archive", json={"url": "https://example.org/", "archivers": ["fax"]})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "unknown_archiver"
    document = client.get(f"{API}/openapi.json").get_json()
    assert not any("422" in op["responses"] for ops in document["paths"].values() for op in ops.values())


def test_the_docs_page_works_offline_under_a_strict_policy(served_api, service):
    page = requests.get(f"{served_api}{API}/docs", timeout=10)
    assert page.status_code == 200 and "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http" not in page.text  # nothing from another origin
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=service.settings.chromium_path)
        try:
            tab = browser.new_page()
            violations: list[str] = []
            tab.on(
                "console",
                lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
            )
            tab.route(re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: route.abort())  # offline
            tab.goto(f"{served_api}{API}/docs")
            tab.locator("h2", has_text="Archive one URL").first.wait_for(timeout=30_000)  # rendered
            # Only Redoc's "powered by" logo asks for another origin; script, style and the worker are all its own.
            assert [v for v in violations if "cdn.redoc.ly/redoc/logo-mini.svg" not in v] == []
        finally:
            browser.close()


@pytest.fixture
def live_api(service_on_each_database):
    """The API on a real server, on SQLite and on Postgres, with an admin key (auth is on), and something for
    each id in a path to name: a finished task with its PDF stored and a summary, its item, an import."""
    service = service_on_each_database
    headers = {"Authorization": f"Bearer {ApiKeys(service.runtime.engine).create('fuzz', 'admin')[1]}"}
    client, ledger, store = service.api.test_client(), service.runtime.ledger, service.runtime.store
    task = client.post(
        f"{API}/archive", json={"url": "https://example.org/seeded", "archivers": ["pdf"]}, headers=headers
    ).get_json()
    ledger.claim(task["task_id"], "pdf", "test")
    stored = store.put(f"{task['task_id']}/pdf.pdf", b"%PDF-1.4 seeded", "application/pdf")
    assert ledger.complete(task["task_id"], "pdf", "test", stored, meta={"title": "Seeded"}, duration_ms=1) is not None
    service.runtime.summaries.save(
        task["task_id"], "seeded", status="success", model="extractive", prompt_version="1", result={"lede": "A page."}
    )
    imported = client.post(
        f"{API}/import", data={"file": (io.BytesIO(b"https://example.org/imported\n"), "urls.txt")}, headers=headers
    ).get_json()
    ids = {
        "task_id": task["task_id"],
        "item_id": task["item_id"],
        "archive_id": task["task_id"],
        "archiver": "pdf",
        "import_id": imported["import_id"],
    }
    with served(service.api) as url:
        yield url, headers, ids


def test_the_live_api_keeps_to_its_document(live_api):
    """Every GET of something by its id answers 200 as documented for what was made; then schemathesis
    generates requests from the document for every operation, and each answer is no 5xx and matches the
    status codes, content types, headers and schemas documented for it."""
    url, headers, ids = live_api
    schema = schemathesis.openapi.from_url(f"{url}{API}/openapi.json")
    schema.config.base_url = url
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = requests.get(f"{url}{API}/openapi.json", timeout=10).json()["paths"]
    assert len(operations) == sum(len(methods) for methods in documented.values())

    by_id = [op for op in operations if op.method == "get" and "{" in op.path]
    assert {op.path for op in by_id} == {
        f"{API}/tasks/{{task_id}}",
        f"{API}/tasks/{{task_id}}/events",
        f"{API}/items/{{item_id}}",
        f"{API}/archives/{{archive_id}}/all",
        f"{API}/archives/{{archive_id}}/{{archiver}}",
        f"{API}/summaries/{{archive_id}}",
        f"{API}/imports/{{import_id}}",
    }
    for operation in by_id:
        names = [parameter.name for parameter in operation.path_parameters]
        case = operation.Case(path_parameters={name: ids[name] for name in names})
        response = case.call_and_validate(headers=headers, checks=[not_a_server_error, *CONFORMANCE])
        assert response.status_code == 200, (operation.path, response.text[:300])

    exercised: set[tuple[str, str]] = set()
    for operation in operations:
        checks = CONFORMANCE if operation.path in PROBES else [not_a_server_error, *CONFORMANCE]
        keeps_to_it(operation, headers, checks, exercised)()
    assert len(exercised) == len(operations)


def keeps_to_it(operation, headers: dict[str, str], checks: list, exercised: set[tuple[str, str]]):
    """A hypothesis test of one operation: requests made from its document, each answer checked (and the
    operation noted in ``exercised``)."""
    cases = operation.as_strategy()

    @given(case=cases.map(waits_briefly) if operation.path in WAITING else cases)
    @hypothesis_settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(headers=headers, checks=checks)
        exercised.add((case.method, case.path))

    return run
