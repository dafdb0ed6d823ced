"""What many tests do: poll until a state is reached, submit work to the API and wait for it, and
make the ledger rows a test starts from.

``client`` is the Flask test client or an ``HttpApi`` (a served API, the emulator stack's): both
``get`` and ``post`` a path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from sqlalchemy import select

from htbase.config import Settings
from infra.ledger import Ledger, NewItem
from infra.models import Artifact
from infra.storage import StoredObject

API = "/api/v2"
TERMINAL = ("success", "partial", "failed", "cancelled")
# The files a task captured five ways stores.
ARCHIVE_FILES = ("singlefile.html", "monolith.html", "readability.html", "readability.txt", "pdf.pdf", "screenshot.png")
T = TypeVar("T")


def embedded_settings(root: Path, **changes: Any) -> Settings:
    """The embedded defaults (SQLite, local files) under ``root``, loopback allowed for the test site,
    quick retries and no housekeeping timer; ``changes`` as a test needs them."""
    return Settings(
        database_url=f"sqlite:///{root / 'htbase.db'}",
        local_storage_path=root / "archives",
        allow_private_urls=True,
        capture_timeout_s=30,
        max_attempts=3,
        retry_backoff_s=0.2,
        sweep_interval_s=3600,
    ).with_(**changes)


def wait_for(condition: Callable[[], T], timeout_s: float = 60.0, what: str = "the condition") -> T:
    """Poll ``condition`` until it returns something true, and return that.

    The timeout only stops a test that would otherwise hang: it is never what the test measures,
    so make it generous (a loaded 2-core machine is slow)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.1)


class HttpApi:
    """The API at ``base_url``, spoken like the Flask test client: ``get`` and ``post`` a path."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def get(self, path: str, **options: Any) -> requests.Response:
        return requests.get(self.base_url + path, timeout=30, **options)

    def post(self, path: str, json: Any = None, **options: Any) -> requests.Response:
        return requests.post(self.base_url + path, json=json, timeout=30, **options)


def body(response: Any) -> Any:
    """The JSON body of a Flask test response or a requests response."""
    return response.get_json() if hasattr(response, "get_json") else response.json()


def submit(client: Any, url: str, **fields: Any) -> str:
    """POST one URL for archiving; its task id (the answer must be 202)."""
    response = client.post(f"{API}/archive", json={"url": url, **fields})
    assert response.status_code == 202, body(response)
    return body(response)["task_id"]


def task(client: Any, task_id: str) -> dict:
    return body(client.get(f"{API}/tasks/{task_id}"))


def finished(client: Any, task_id: str, timeout_s: float = 120.0) -> dict:
    """The task once it is terminal."""
    try:
        return wait_for(lambda: (found := task(client, task_id))["status"] in TERMINAL and found, timeout_s)
    except AssertionError:
        raise AssertionError(f"task {task_id} unfinished after {timeout_s:.0f}s: {task(client, task_id)}") from None


def new_item(url: str = "https://example.org/a", item_id: str | None = None) -> NewItem:
    return NewItem(url=url, url_hash=url.rsplit("/", 1)[-1] * 8, item_id=item_id)


def time_passes(ledger: Ledger, task_id: str, seconds: float) -> None:
    """As if ``seconds`` had gone by for the task's artifacts: their leases and last changes move back."""
    back = timedelta(seconds=seconds)
    with ledger.session() as session, session.begin():
        for artifact in session.scalars(select(Artifact).where(Artifact.task_id == task_id)):
            artifact.updated_at -= back
            if artifact.lease_expires_at:
                artifact.lease_expires_at -= back


def stored(task_id: str, archiver: str = "pdf") -> StoredObject:
    """What a store answers for a capture it kept (nothing is written)."""
    return StoredObject(f"{task_id}/{archiver}.pdf", f"file:///x/{task_id}", 10, "ab" * 32, "application/pdf")


class RecordingEnv(Mapping):
    """An empty environment that remembers every name it was asked for."""

    def __init__(self) -> None:
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_env_names() -> frozenset[str]:
    """Every env var Settings.from_env reads (an empty environment makes it ask for all of them)."""
    env = RecordingEnv()
    Settings.from_env(env)
    return frozenset(env.asked)


class MemoryReplica:
    """The Firestore replica as a dict: what the documents hold after every write."""

    def __init__(self) -> None:
        self.documents: dict[str, dict] = {}

    def write(self, documents: Mapping[str, dict]) -> None:
        self.documents.update(documents)


# Terraform offline: no version check against HashiCorp's servers, no prompts.
TERRAFORM_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}


def terraform_binary() -> str:
    """Terraform on PATH; without it the check fails, saying how to get it (nothing is downloaded)."""
    found = shutil.which("terraform")
    if found is None:
        pytest.fail(
            "terraform is not on PATH: install Terraform >= 1.9 "
            "(https://developer.hashicorp.com/terraform/install) to check terraform/",
            pytrace=False,
        )
    return found


def terraform_console(work: Path, expression: str, var_file: Path) -> Any:
    """The JSON value of ``jsonencode(...)`` ``expression`` evaluated by Terraform in the module at
    ``work`` (declarations only: no provider is needed, nothing is fetched)."""
    terraform = terraform_binary()
    subprocess.run(
        [terraform, "init", "-backend=false", "-no-color"], cwd=work, env=TERRAFORM_ENV, check=True, capture_output=True
    )
    result = subprocess.run(
        [terraform, "console", "-no-color", f"-var-file={var_file}"],
        cwd=work,
        env=TERRAFORM_ENV,
        input=expression,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(json.loads(result.stdout))
