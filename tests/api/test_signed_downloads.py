"""Downloads from GCS: the API answers 302 to a V4 signed URL, so no artifact passes through Cloud Run
(which caps a response at 32 MiB); sandboxed documents are still served by the API itself.

Signing is real where it can be here: a service-account key made on the spot signs, and the URL
is fetched from the real fake-gcs-server. On Cloud Run there is no key: the store signs through
IAM signBlob as SIGNED_URL_SERVICE_ACCOUNT, which needs Google; that path is checked by the
arguments it hands the storage client.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
from google.cloud import storage
from google.oauth2 import service_account

from api.app import create_app
from emulators.gcs import FakeGcsServer
from htbase.config import Settings
from htbase.urls import url_hash
from infra import identity
from infra.db import migrate
from infra.ledger import NewItem
from infra.runtime import Runtime
from infra.storage import GcsFileStore, make_file_store
from tests.keys import service_account_key

API = "/api/v2"
SIGNER = "htbase-api@htbase-prod.iam.gserviceaccount.com"
PDF = b"%PDF-1.7\n" + b"0" * 4096 + b"\n%%EOF\n"


@pytest.fixture(scope="module")
def gcs_server():
    with FakeGcsServer() as server:
        yield server


@pytest.fixture
def runtime(gcs_server, tmp_path):
    bucket = f"dl-{uuid.uuid4().hex[:12]}"
    gcs_server.create_bucket(bucket)
    runtime = Runtime(
        Settings(
            database_url=f"sqlite:///{tmp_path / 'htbase.db'}",
            file_storage_provider="gcs",
            gcs_bucket=bucket,
            storage_emulator_host=gcs_server.endpoint,
        )
    )
    migrate(runtime.engine)
    yield runtime
    runtime.close()


def key_signing_store(runtime: Runtime, gcs_server: FakeGcsServer) -> GcsFileStore:
    """The runtime's bucket, through a client whose credentials hold a key (they sign offline)."""
    credentials = service_account.Credentials.from_service_account_info(
        service_account_key(SIGNER, "htbase-prod"), scopes=storage.Client.SCOPE
    )
    # Google would mint the access token; fake-gcs-server takes any, so one is set here.
    credentials.token, credentials.expiry = "local", datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1)
    client = storage.Client(
        project="htbase-prod", credentials=credentials, client_options={"api_endpoint": gcs_server.endpoint}
    )
    return GcsFileStore(runtime.settings.gcs_bucket, client)


def finished(runtime: Runtime, archiver: str, data: bytes, content_type: str) -> str:
    """A task whose ``archiver`` artifact is stored and recorded as done; its id."""
    url = "https://example.org/paper"
    task_id = runtime.ledger.create_task([NewItem(url, url_hash(url))], [archiver]).task_id
    runtime.ledger.claim(task_id, archiver, "test")
    stored = runtime.store.put(f"{task_id}/{archiver}.{content_type.split('/')[1]}", data, content_type)
    runtime.ledger.complete(task_id, archiver, "test", stored, meta={}, duration_ms=1)
    return task_id


def test_a_pdf_on_gcs_is_a_redirect_to_a_signed_url_that_serves_it(runtime, gcs_server):
    runtime.store = key_signing_store(runtime, gcs_server)
    task_id = finished(runtime, "pdf", PDF, "application/pdf")

    response = create_app(runtime).test_client().get(f"{API}/archives/{task_id}/pdf")

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(f"{gcs_server.endpoint}/{runtime.settings.gcs_bucket}/{task_id}/pdf.pdf?")
    assert "X-Goog-Signature=" in location and "X-Goog-Expires=900" in location
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and fetched.content == PDF


def test_a_sandboxed_document_is_served_by_the_api_even_where_urls_can_be_signed(runtime, gcs_server):
    runtime.store = key_signing_store(runtime, gcs_server)
    page = b"<!doctype html><p>archived</p>"
    task_id = finished(runtime, "singlefile", page, "text/html")

    response = create_app(runtime).test_client().get(f"{API}/archives/{task_id}/singlefile")

    assert response.status_code == 200 and response.data == page
    assert "sandbox" in response.headers["Content-Security-Policy"]


def test_without_a_key_or_a_signer_the_api_streams(runtime):
    task_id = finished(runtime, "pdf", PDF, "application/pdf")
    response = create_app(runtime).test_client().get(f"{API}/archives/{task_id}/pdf")
    assert response.status_code == 200 and response.data == PDF


def test_on_cloud_run_the_signer_signs_through_iam_with_the_process_token(runtime, monkeypatch):
    store = make_file_store(runtime.settings.with_(signed_url_service_account=SIGNER))
    asked: list[dict] = []
    monkeypatch.setattr(identity, "credentials", lambda: SimpleNamespace(token="ya29.process-token"))
    monkeypatch.setattr(
        storage.Blob,
        "generate_signed_url",
        lambda blob, **kwargs: asked.append({"name": blob.name, **kwargs}) or "https://signed/",
    )

    assert store.signed_url("task-1/pdf.pdf", 900) == "https://signed/"
    assert asked == [
        {
            "name": "task-1/pdf.pdf",
            "version": "v4",
            "expiration": timedelta(seconds=900),
            "method": "GET",
            "service_account_email": SIGNER,
            "access_token": "ya29.process-token",
        }
    ]
