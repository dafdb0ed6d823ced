"""Artifact storage: one behavioural suite run against local files and against
the real fake-gcs-server, plus the GCS-only encoding and signing rules."""

from __future__ import annotations

import gzip
import hashlib
import threading
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from urllib.request import url2pathname

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage
from google.oauth2 import service_account

from emulators.gcs import FakeGcsServer
from htbase.config import Settings
from infra.storage import STREAM_CHUNK_BYTES, GcsFileStore, LocalFileStore, ObjectNotFound, gcs_client, make_file_store

# A minimal valid PNG; it even starts with bytes that are not text.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082"
)
HTML = b"<!doctype html><html><body>" + b"<p>archived words</p>" * 200 + b"</body></html>"
KEY = "task-1/pdf.pdf"


@pytest.fixture(scope="session")
def gcs_server():
    with FakeGcsServer() as server:
        yield server


def gcs_settings(server: FakeGcsServer, bucket: str) -> Settings:
    return Settings(file_storage_provider="gcs", gcs_bucket=bucket, storage_emulator_host=server.endpoint)


@pytest.fixture
def gcs_store(gcs_server) -> GcsFileStore:
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    gcs_server.create_bucket(bucket)
    store = make_file_store(gcs_settings(gcs_server, bucket))
    assert isinstance(store, GcsFileStore)
    return store


@pytest.fixture
def local_store(tmp_path) -> LocalFileStore:
    store = make_file_store(Settings(local_storage_path=tmp_path / "archives"))
    assert isinstance(store, LocalFileStore)
    return store


@pytest.fixture(params=["local", "gcs"])
def store(request):
    return request.getfixturevalue(f"{request.param}_store")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- both stores -------------------------------------------------------------


def test_put_get_round_trip(store):
    obj = store.put(KEY, PNG, "application/pdf")
    assert (obj.key, obj.size, obj.sha256, obj.content_type) == (KEY, len(PNG), sha(PNG), "application/pdf")
    assert store.get(KEY) == PNG
    assert store.exists(KEY)


def test_uri_names_the_object(store):
    obj = store.put(KEY, PNG, "image/png")
    if isinstance(store, LocalFileStore):
        assert obj.uri.startswith("file:///")
        assert Path(url2pathname(urlparse(obj.uri).path)).read_bytes() == PNG
    else:
        assert obj.uri == f"gs://{store.bucket.name}/{KEY}"


def test_put_is_create_once(store):
    first = store.put("task-1/readability.html", HTML, "text/html")
    second = store.put("task-1/readability.html", b"<p>redelivered, different</p>", "text/html")
    assert second == first
    assert store.get("task-1/readability.html") == HTML


def test_concurrent_puts_of_one_key_leave_one_intact_object(store):
    payloads = [bytes([i]) * 200_000 + PNG for i in range(8)]
    start = threading.Barrier(len(payloads))
    results = [None] * len(payloads)

    def put(i: int) -> None:
        start.wait()
        results[i] = store.put(KEY, payloads[i], "application/pdf")

    threads = [threading.Thread(target=put, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    stored = store.get(KEY)
    assert stored in payloads
    assert {r.sha256 for r in results} == {sha(stored)}
    assert {r.size for r in results} == {len(stored)}


def test_missing_key_raises_object_not_found(store):
    assert not store.exists("task-1/nothing.png")
    with pytest.raises(ObjectNotFound):
        store.get("task-1/nothing.png")
    with pytest.raises(KeyError):  # ObjectNotFound is a KeyError for callers that catch that
        store.get("task-1/nothing.png")


@pytest.mark.parametrize("content_type", ["text/html; charset=utf-8", "image/png"])
def test_open_streams_an_object_larger_than_a_chunk(store, content_type):
    data = b"".join(i.to_bytes(4, "big") for i in range(STREAM_CHUNK_BYTES // 2))  # 2 chunks, barely compressible
    store.put(KEY, data, content_type)
    with store.open(KEY) as f:
        parts = iter(lambda: f.read(64 * 1024), b"")
        first = next(parts)
        assert len(first) == 64 * 1024  # a piece at a time, not the whole object
        assert first + b"".join(parts) == data
    with pytest.raises(ObjectNotFound):
        store.open("task-1/nothing.png")


@pytest.mark.parametrize("key", ["../escape.png", "task-1/../../escape.png", "/etc/escape.png", "", "a//b", "a\\..\\b"])
def test_keys_that_could_escape_are_refused(store, key, tmp_path):
    with pytest.raises(ValueError):
        store.put(key, PNG, "image/png")
    with pytest.raises(ValueError):
        store.get(key)
    assert not (tmp_path / "escape.png").exists()


# --- local only --------------------------------------------------------------


def test_local_put_leaves_no_temp_files(local_store):
    local_store.put(KEY, PNG, "application/pdf")
    local_store.put(KEY, b"again", "application/pdf")
    assert [p.name for p in (local_store.root / "task-1").iterdir()] == ["pdf.pdf"]
    assert (local_store.root / KEY).stat().st_mode & 0o777 == 0o644


def test_local_store_has_no_signed_urls(local_store):
    local_store.put(KEY, PNG, "application/pdf")
    assert local_store.signed_url(KEY, 300) is None


# --- GCS only ----------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/html", "text/html; charset=utf-8", "application/json", "image/svg+xml"])
def test_gcs_stores_text_gzipped_and_returns_the_original(gcs_store, content_type):
    key = "task-1/readability.html"
    obj = gcs_store.put(key, HTML, content_type)
    assert (obj.size, obj.sha256) == (len(HTML), sha(HTML))

    raw = gcs_store.bucket.get_blob(key)
    assert raw.content_encoding == "gzip"
    assert raw.content_type == content_type
    assert raw.metadata["sha256"] == sha(HTML)
    stored = raw.download_as_bytes(raw_download=True)
    assert stored[:2] == b"\x1f\x8b" and len(stored) == raw.size < len(HTML)
    assert gzip.decompress(stored) == HTML

    assert gcs_store.get(key) == HTML
    # The create-once answer describes the original bytes, not the gzip.
    assert gcs_store.put(key, b"other", content_type) == obj


def test_gcs_stores_binary_as_is(gcs_store):
    obj = gcs_store.put("task-1/screenshot.png", PNG, "image/png")
    raw = gcs_store.bucket.get_blob("task-1/screenshot.png")
    assert raw.content_encoding is None
    assert raw.download_as_bytes(raw_download=True) == PNG
    assert (obj.size, obj.sha256) == (raw.size, sha(PNG))


def test_gcs_describes_objects_written_by_others(gcs_store):
    gcs_store.bucket.blob(KEY).upload_from_string(PNG, content_type="application/pdf")
    assert gcs_store.put(KEY, b"mine", "application/pdf").sha256 == sha(PNG)


def test_gcs_without_signing_credentials_has_no_signed_urls(gcs_store):
    assert gcs_store.signed_url(KEY, 300) is None


def throwaway_service_account() -> service_account.Credentials:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "htbase-test",
            "private_key_id": "test-key",
            "private_key": pem,
            "client_email": "signer@htbase-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.mark.parametrize(
    ("key", "data", "content_type"),
    [
        ("task-1/singlefile.html", HTML, "text/html"),
        ("task-1/screenshot.png", PNG, "image/png"),
    ],
)
def test_gcs_signed_url_downloads_the_original_bytes(gcs_server, gcs_store, key, data, content_type):
    gcs_store.put(key, data, content_type)
    # Signing is offline with the key; the anonymous store did the upload,
    # because these credentials cannot fetch tokens without the internet.
    client = storage.Client(
        project="htbase-test",
        credentials=throwaway_service_account(),
        client_options={"api_endpoint": gcs_server.endpoint},
    )
    url = GcsFileStore(gcs_store.bucket.name, client).signed_url(key, 300)

    query = parse_qs(urlparse(url).query)
    assert url.startswith(f"{gcs_server.endpoint}/{gcs_store.bucket.name}/{key}?")
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["300"]
    assert query["X-Goog-Credential"][0].startswith("signer@htbase-test.iam.gserviceaccount.com/")
    response = requests.get(url, timeout=10)  # decodes Content-Encoding: gzip, like a browser
    assert response.status_code == 200
    assert response.content == data


def test_gcs_client_comes_from_settings_not_the_environment(gcs_server, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")  # a dead port
    bare_host = gcs_server.endpoint.removeprefix("http://")  # the scheme is optional
    client = gcs_client(gcs_settings(gcs_server, "unused").with_(storage_emulator_host=bare_host))
    assert client.api_endpoint == gcs_server.endpoint
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    gcs_server.create_bucket(bucket)
    assert client.bucket(bucket).exists()
