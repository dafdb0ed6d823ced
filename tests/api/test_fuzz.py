"""Property-based fuzzing of the API's JSON bodies: whatever a client sends, the answer is never a 5xx."""

from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from htbase.messages import ARCHIVERS
from tests.api.conftest import API

# Text as JSON can carry it: NUL, controls and lone surrogates included.
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=10
)

# Each field is a plausible value (so that requests are also accepted) or anything at all.
GOOD_URLS = st.builds(
    "{}://{}/{}".format,
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["example.org", "e.org:8080", "[::1]", "xn--e1afmkfd.org"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=30),
)
GOOD_IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._~:@+=-]{0,8}", fullmatch=True)
GOOD = {
    "url": GOOD_URLS,
    "item_id": GOOD_IDS,
    "archivers": st.lists(st.sampled_from(("pdf", "screenshot")), min_size=1, max_size=3),
    "options": st.fixed_dictionaries({"timeout": st.floats(0.001, 300) | st.integers(1, 300)}),  # MAX_CAPTURE_TIMEOUT
    "webhook_url": GOOD_URLS,
}
ANY = {
    "url": st.builds("{}://{}/{}".format, st.sampled_from(["ftp", "javascript", "file", ""]) | TEXT, TEXT, TEXT)
    | JSON_VALUES,
    "item_id": TEXT | JSON_VALUES,
    "archivers": st.lists(st.sampled_from(ARCHIVERS + ("", "fax")), max_size=6) | JSON_VALUES,
    "options": st.fixed_dictionaries({}, optional={"timeout": st.floats() | st.integers() | JSON_VALUES}) | JSON_VALUES,
    "webhook_url": TEXT | JSON_VALUES,
}


def bodies(required: dict, optional: dict) -> st.SearchStrategy:
    """Well-formed bodies, bodies with any field gone wrong, and any JSON at all."""
    good = {name: GOOD[name] for name in optional}
    either = {name: GOOD[name] | ANY[name] for name in optional}
    return (
        st.fixed_dictionaries(required, optional=good)
        | st.fixed_dictionaries(
            {}, optional={**either, **{name: value | JSON_VALUES for name, value in required.items()}}
        )
        | JSON_VALUES
    )


ARCHIVE_BODIES = bodies({"url": GOOD_URLS}, {"item_id", "archivers", "options", "webhook_url"})
ITEMS = st.fixed_dictionaries({"url": GOOD_URLS}, optional={"item_id": GOOD_IDS}) | st.fixed_dictionaries(
    {}, optional={"url": GOOD_URLS | ANY["url"], "item_id": GOOD_IDS | ANY["item_id"]}
)
BATCH_BODIES = bodies({"items": st.lists(ITEMS, min_size=1, max_size=5)}, {"archivers", "options", "webhook_url"})
SUMMARIZE_BODIES = st.fixed_dictionaries({}, optional={"force": st.booleans() | JSON_VALUES}) | JSON_VALUES
FUZZ = hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def post(client, path: str, body) -> int:
    # json.dumps writes NaN and Infinity too, as a careless client would; the API refuses them.
    return client.post(path, data=json.dumps(body), content_type="application/json").status_code


@FUZZ
@given(body=ARCHIVE_BODIES)
def test_archive_bodies(client, body):
    assert post(client, f"{API}/archive", body) in (202, 400, 409)


@FUZZ
@given(body=BATCH_BODIES)
def test_batch_bodies(client, body):
    assert post(client, f"{API}/archive/batch", body) in (202, 400, 409)


@FUZZ
@given(body=SUMMARIZE_BODIES, archive_id=GOOD_IDS | TEXT)
@example(body={}, archive_id="/0")  # an encoded slash once got a 308 to /summarize/0 (slashes merged)
def test_summarize_bodies_and_ids(client, body, archive_id):
    path = f"{API}/summarize/{quote(archive_id, safe='', errors='surrogatepass')}"  # a lone surrogate too
    assert post(client, path, body) in (400, 404, 405, 409)
