"""Push handlers against hostile envelopes: an input error is never answered 5xx (which would bring the
message back forever), and the dead-letter handler acknowledges everything it cannot process."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from functions.push import create_push_app
from htbase.messages import ARCHIVERS, ArchiveRequest, build_push_envelope
from htbase.topology import ARCHIVE_PATH, DEAD_LETTER_PATH, SUMMARIZE_PATH
from service.embedded import EmbeddedService

DEEP = b"[" * 100_000 + b"]" * 100_000


def push_client_for(settings):
    service = EmbeddedService(settings.with_(archivers=("pdf",))).start()
    service.dispatcher.close()  # nothing is captured here
    return service, create_push_app(service.runtime, authenticator=None).test_client()


@pytest.fixture
def push(embedded_settings):
    service, client = push_client_for(embedded_settings)
    yield client
    service.close()


@pytest.fixture
def push_on_each_database(settings):
    service, client = push_client_for(settings)
    yield client
    service.close()


def envelope(data: bytes) -> dict:
    return build_push_envelope(
        data, {"CloudPubSubDeadLetterSourceDeliveryCount": "5"}, subscription="projects/p/subscriptions/s"
    )


def archive_message(**fields) -> bytes:
    request = {"task_id": "t", "item_id": "i", "url": "https://e.org/", "archiver": "pdf", **fields}
    return json.dumps(request).encode()  # ensure_ascii: a lone surrogate travels as \\udXXX


UNPROCESSABLE = [
    pytest.param(envelope(DEEP), id="data nested 100,000 deep"),
    pytest.param(envelope(archive_message(task_id="a\x00b")), id="NUL in task_id"),
    pytest.param(envelope(archive_message(task_id="a\ud800")), id="lone surrogate in task_id"),
    pytest.param(envelope(archive_message(url="https://e.org/\x00")), id="NUL in url"),
    pytest.param(envelope(b"\xff\xfe not even text"), id="not UTF-8"),
    pytest.param(envelope(b'{"neither": "t"}'), id="neither an archive nor a summary request"),
]


@pytest.mark.parametrize("body", UNPROCESSABLE)
def test_the_dead_letter_handler_acknowledges_what_it_can_never_process_on_each_database(push_on_each_database, body):
    response = push_on_each_database.post(DEAD_LETTER_PATH, json=body)
    assert response.status_code == 200 and response.get_json()["status"] == "dropped"


@pytest.mark.parametrize("raw", [DEEP, b"{" * 50_000, b"not json", b"\xff"])
def test_the_dead_letter_handler_acknowledges_a_body_that_is_not_an_envelope(push, raw):
    response = push.post(DEAD_LETTER_PATH, data=raw, content_type="application/json")
    assert response.status_code == 200 and response.get_json()["status"] == "dropped"


@pytest.mark.parametrize("body", UNPROCESSABLE)
def test_the_work_handlers_never_answer_them_with_5xx(push, body):
    assert push.post(ARCHIVE_PATH, json=body).status_code == 400
    assert push.post(SUMMARIZE_PATH, json=body).status_code in (200, 400)  # some are summary requests to skip
    assert push.post(ARCHIVE_PATH, data=DEEP, content_type="application/json").status_code == 400


# --- fuzzing ------------------------------------------------------------------------------------

# Text as JSON can carry it: NUL, controls and lone surrogates included.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10
)
REQUEST_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "task_id": TEXT | JSON_VALUES,
        "item_id": TEXT | JSON_VALUES,
        "url": TEXT | JSON_VALUES,
        "archiver": st.sampled_from(ARCHIVERS + ("", "fax")) | JSON_VALUES,
        "options": JSON_VALUES,
        "request_id": TEXT | JSON_VALUES,
        "force": JSON_VALUES,
    },
)
DATA = (
    st.binary(max_size=200)
    | REQUEST_FIELDS.map(lambda fields: json.dumps(fields).encode())
    | JSON_VALUES.map(lambda value: json.dumps(value).encode())
)
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "data": DATA.map(lambda data: base64.b64encode(data).decode()) | JSON_VALUES,
        "attributes": st.dictionaries(TEXT, TEXT, max_size=3) | JSON_VALUES,
        "messageId": JSON_VALUES,
        "publishTime": JSON_VALUES,
    },
)
ENVELOPES = (
    st.fixed_dictionaries({"message": MESSAGES}, optional={"subscription": JSON_VALUES, "deliveryAttempt": JSON_VALUES})
    | JSON_VALUES
)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=ENVELOPES)
def test_no_envelope_gets_a_5xx_and_dead_letters_are_always_acknowledged(push, body):
    for path in (ARCHIVE_PATH, SUMMARIZE_PATH):
        assert push.post(path, data=json.dumps(body), content_type="application/json").status_code in (200, 400)
    assert push.post(DEAD_LETTER_PATH, data=json.dumps(body), content_type="application/json").status_code == 200


def test_a_well_formed_archive_request_for_no_task_is_acknowledged(push):
    message = ArchiveRequest("no-such-task", "i", "https://e.org/", "pdf").to_json()
    assert push.post(ARCHIVE_PATH, json=envelope(message)).status_code == 200
    assert push.post(DEAD_LETTER_PATH, json=envelope(message)).get_json()["status"] == "dead-lettered"
