"""The one typed configuration object, read from the environment at start-up.

Nothing else in the code base reads ``os.environ``: build a ``Settings`` once
(``Settings.from_env()``) and pass it down.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from htbase.messages import ARCHIVERS

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_ROLES = ("all-in-one", "api", "archiver", "summarizer")


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, never later."""


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _list(value: str | None, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    if not value:
        return default
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _default_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium"


@dataclass(frozen=True)
class Settings:
    # Process shape
    service_role: str = "all-in-one"
    archivers: tuple[str, ...] = ARCHIVERS
    host: str = "127.0.0.1"
    port: int = 8080
    worker_concurrency: int = len(ARCHIVERS)  # embedded: all five captures of a page at once
    web_workers: int = 2            # API processes under gunicorn (SERVICE_ROLE=api)
    log_level: str = "INFO"
    log_format: str = "pretty"

    # Ledger (SQLite embedded, Postgres for real)
    database_url: str = ""
    instance_connection_name: str = ""

    # Files
    file_storage_provider: str = "local"
    local_storage_path: Path = PROJECT_ROOT / "data" / "archives"
    gcs_bucket: str = ""
    storage_emulator_host: str = ""
    google_cloud_project: str = ""

    # Captures
    capture_timeout_s: float = 60.0
    max_capture_bytes: int = 50 * 1024 * 1024
    allow_private_urls: bool = False
    egress_allow_cidrs: tuple[str, ...] = ()
    chromium_path: str = field(default_factory=_default_chromium)
    singlefile_path: str = str(PROJECT_ROOT / "node_modules" / ".bin" / "single-file")
    monolith_path: str = ""

    # Delivery
    lease_s: float = 300.0
    max_attempts: int = 5           # captures the ledger tries before failing an artifact
    max_delivery_attempts: int = 5  # pushes a subscription tries before dead-lettering (Pub/Sub: 5..100)
    retry_backoff_s: float = 1.0
    sweep_interval_s: float = 30.0

    # Messaging: "embedded" (in-process dispatcher) or "pubsub" (Google Pub/Sub or its emulator)
    broker: str = "embedded"
    pubsub_project_id: str = "htbase-local"
    pubsub_emulator_host: str = ""
    topic_prefix: str = "htbase-"
    # Push authentication: a Google OIDC token (cloud) or a shared token (emulator mode)
    push_auth_token: str = ""
    push_audience: str = ""
    push_service_account: str = ""
    oidc_certs_url: str = "https://www.googleapis.com/oauth2/v1/certs"

    # Firestore replica of task documents (best effort; off when no project is set)
    firestore_project_id: str = ""
    firestore_emulator_host: str = ""
    firestore_collection: str = "tasks"

    # Summaries (LLM_PROVIDER is one provider or a comma-separated fallback chain)
    llm_providers: tuple[str, ...] = ("extractive",)
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_timeout_s: float = 60.0
    llm_requests_per_minute: int = 60
    llm_context_tokens: int = 8192
    llm_breaker_failures: int = 3  # consecutive failures before a provider is skipped (0: never)
    llm_breaker_cooldown_s: float = 60.0

    def __post_init__(self) -> None:
        if self.service_role not in SERVICE_ROLES:
            raise ConfigError(f"SERVICE_ROLE must be one of {SERVICE_ROLES}, got {self.service_role!r}")
        unknown = set(self.archivers) - set(ARCHIVERS)
        if unknown:
            raise ConfigError(f"ARCHIVERS has unknown archivers {sorted(unknown)}; known: {ARCHIVERS}")
        if self.file_storage_provider not in ("local", "gcs"):
            raise ConfigError("FILE_STORAGE_PROVIDER must be 'local' or 'gcs'")
        if self.file_storage_provider == "gcs" and not self.gcs_bucket:
            raise ConfigError("FILE_STORAGE_PROVIDER=gcs needs GCS_BUCKET")
        if not 5 <= self.max_delivery_attempts <= 100:
            raise ConfigError("MAX_DELIVERY_ATTEMPTS must be within 5..100 (Pub/Sub's limits)")
        if self.broker not in ("embedded", "pubsub"):
            raise ConfigError("BROKER must be 'embedded' or 'pubsub'")
        if self.log_format not in ("json", "pretty"):
            raise ConfigError("LOG_FORMAT must be 'json' or 'pretty'")
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.local_storage_path.parent / 'htbase.db'}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        defaults = cls.__dataclass_fields__
        storage_path = env.get("LOCAL_STORAGE_PATH")
        return cls(
            service_role=env.get("SERVICE_ROLE", "all-in-one"),
            archivers=_list(env.get("ARCHIVERS"), ARCHIVERS),
            host=env.get("HOST", "127.0.0.1"),
            port=_int(env, "PORT", 8080),
            worker_concurrency=_int(env, "WORKER_CONCURRENCY", len(ARCHIVERS)),
            web_workers=_int(env, "WEB_CONCURRENCY", 2),
            log_level=env.get("LOG_LEVEL", "INFO").upper(),
            log_format=env.get("LOG_FORMAT", "pretty"),
            database_url=env.get("DATABASE_URL", ""),
            instance_connection_name=env.get("INSTANCE_CONNECTION_NAME", ""),
            file_storage_provider=env.get("FILE_STORAGE_PROVIDER", "local"),
            local_storage_path=Path(storage_path) if storage_path else defaults["local_storage_path"].default,
            gcs_bucket=env.get("GCS_BUCKET", ""),
            storage_emulator_host=env.get("STORAGE_EMULATOR_HOST", ""),
            google_cloud_project=env.get("GOOGLE_CLOUD_PROJECT", ""),
            capture_timeout_s=_float(env, "CAPTURE_TIMEOUT", 60.0),
            max_capture_bytes=_int(env, "MAX_CAPTURE_BYTES", 50 * 1024 * 1024),
            allow_private_urls=_bool(env.get("ALLOW_PRIVATE_URLS")),
            egress_allow_cidrs=_list(env.get("EGRESS_ALLOW_CIDRS")),
            chromium_path=env.get("CHROMIUM_PATH") or _default_chromium(),
            singlefile_path=env.get("SINGLEFILE_PATH") or defaults["singlefile_path"].default,
            monolith_path=env.get("MONOLITH_PATH") or (shutil.which("monolith") or ""),
            lease_s=_float(env, "LEASE_SECONDS", 300.0),
            max_attempts=_int(env, "MAX_ATTEMPTS", 5),
            max_delivery_attempts=_int(env, "MAX_DELIVERY_ATTEMPTS", 5),
            retry_backoff_s=_float(env, "RETRY_BACKOFF_SECONDS", 1.0),
            sweep_interval_s=_float(env, "SWEEP_INTERVAL_SECONDS", 30.0),
            broker=env.get("BROKER") or ("pubsub" if env.get("PUBSUB_EMULATOR_HOST") else "embedded"),
            pubsub_project_id=env.get("PUBSUB_PROJECT_ID") or env.get("GOOGLE_CLOUD_PROJECT") or "htbase-local",
            pubsub_emulator_host=env.get("PUBSUB_EMULATOR_HOST", ""),
            topic_prefix=env.get("TOPIC_PREFIX", "htbase-"),
            push_auth_token=env.get("PUSH_AUTH_TOKEN", ""),
            push_audience=env.get("PUSH_AUDIENCE", ""),
            push_service_account=env.get("PUSH_SERVICE_ACCOUNT", ""),
            oidc_certs_url=env.get("OIDC_CERTS_URL") or defaults["oidc_certs_url"].default,
            firestore_project_id=env.get("FIRESTORE_PROJECT_ID", ""),
            firestore_emulator_host=env.get("FIRESTORE_EMULATOR_HOST", ""),
            firestore_collection=env.get("FIRESTORE_COLLECTION", "tasks"),
            llm_providers=_list(env.get("LLM_PROVIDER"), ("extractive",)),
            llm_base_url=env.get("LLM_BASE_URL", ""),
            llm_model=env.get("LLM_MODEL", ""),
            llm_api_key=env.get("LLM_API_KEY", ""),
            llm_timeout_s=_float(env, "LLM_TIMEOUT", 60.0),
            llm_requests_per_minute=_int(env, "LLM_REQUESTS_PER_MINUTE", 60),
            llm_context_tokens=_int(env, "LLM_CONTEXT_TOKENS", 8192),
            llm_breaker_failures=_int(env, "LLM_BREAKER_FAILURES", 3),
            llm_breaker_cooldown_s=_float(env, "LLM_BREAKER_COOLDOWN", 60.0),
        )

    def with_(self, **changes) -> "Settings":
        """A copy with some settings changed (tests and the CLI use this)."""
        return replace(self, **changes)
