"""The project of a cloud role comes from google-auth's default credentials when GOOGLE_CLOUD_PROJECT is unset.

On Cloud Run the metadata server answers; here a service-account key file made
on the spot (GOOGLE_APPLICATION_CREDENTIALS) names the project, through the
same ``google.auth.default()`` call and without a network call.
"""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from htbase.config import ConfigError, Settings
from htbase.logs import log, setup_logging
from infra import identity
from infra.identity import with_project
from tests.keys import service_account_key

CLOUD_ROLE = {"SERVICE_ROLE": "archiver", "BROKER": "pubsub", "DATABASE_URL": "postgresql+pg8000://u@/htbase"}


@pytest.fixture
def key_file(tmp_path, monkeypatch):
    """Default credentials whose project is ``from-credentials``."""
    path = tmp_path / "key.json"
    key = service_account_key("worker@from-credentials.iam.gserviceaccount.com", "from-credentials")
    path.write_text(json.dumps(key))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    monkeypatch.setattr(identity, "_credentials", None)
    return path


def test_a_cloud_role_without_a_project_takes_the_credentials_one(key_file):
    settings = with_project(Settings.from_env(CLOUD_ROLE))
    assert (settings.google_cloud_project, settings.pubsub_project_id) == ("from-credentials", "from-credentials")


def test_a_named_project_is_kept_and_nothing_is_asked(key_file):
    key_file.unlink()  # asking now would fail
    settings = with_project(Settings.from_env({**CLOUD_ROLE, "GOOGLE_CLOUD_PROJECT": "named"}))
    assert (settings.google_cloud_project, settings.pubsub_project_id) == ("named", "named")


def test_an_explicit_pubsub_project_stays(key_file):
    settings = with_project(Settings.from_env({**CLOUD_ROLE, "PUBSUB_PROJECT_ID": "topics-live-here"}))
    assert (settings.google_cloud_project, settings.pubsub_project_id) == ("from-credentials", "topics-live-here")


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="all-in-one"),
        pytest.param({**CLOUD_ROLE, "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, id="pubsub-emulator"),
        pytest.param({**CLOUD_ROLE, "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443"}, id="gcs-emulator"),
        pytest.param({**CLOUD_ROLE, "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}, id="firestore-emulator"),
    ],
)
def test_embedded_and_emulator_runs_never_ask(key_file, env):
    key_file.unlink()  # asking now would fail
    settings = Settings.from_env(env)
    assert with_project(settings) is settings


def test_no_credentials_and_no_project_refuses_to_start(key_file):
    key_file.unlink()
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT is unset and google-auth found no credentials"):
        with_project(Settings.from_env(CLOUD_ROLE))


def test_the_log_trace_field_names_the_credentials_project(key_file, capsys):
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # The span a log line is written in names its trace (infra/telemetry.py continues a caller's).
    span = NonRecordingSpan(
        SpanContext(
            int("4bf92f3577b34da6a3ce929d0e0e4736", 16), 0x00F067AA0BA902B7, True, TraceFlags(TraceFlags.SAMPLED)
        )
    )
    try:
        setup_logging(with_project(Settings.from_env({**CLOUD_ROLE, "LOG_FORMAT": "json"})))
        with trace.use_span(span):
            log(logging.getLogger("htbase.test"), logging.INFO, "traced")
    finally:
        root.handlers[:], root.level = handlers, level
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["logging.googleapis.com/trace"] == "projects/from-credentials/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert entry["logging.googleapis.com/trace_sampled"] is True
