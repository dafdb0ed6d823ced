"""The one typed configuration object, read from the environment at start-up.

Nothing else in the code base reads ``os.environ``: build a ``Settings`` once
(``Settings.from_env()``) and pass it down. Each setting is declared once, with
its env var, default, meaning and subsystem; ``from_env`` parses every variable
by its field's type, and ``python -m htbase.config --markdown`` prints the
README's table of settings.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from htbase.messages import ARCHIVERS
from htbase.topology import ACK_DEADLINE_S

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVICE_ROLES = ("all-in-one", "api", "archiver", "summarizer")
# The subsystems a setting belongs to, in the README's order.
GROUPS = (
    "process",
    "api keys",
    "client",
    "ledger",
    "files",
    "captures",
    "delivery",
    "messaging",
    "push auth",
    "webhooks",
    "replica",
    "summaries",
    "telemetry",
)
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
CLOUD_SQL_IP_TYPES = ("public", "private", "psc")
TELEMETRY_EXPORTERS = ("none", "otlp", "gcp")
# What a push may take beyond its own timeout and still answer within the ack deadline: a
# capture starting Chromium (up to three 30 s launches) and storing its artifact; a summary
# waiting for rate-limit slots and storing itself.
PUSH_OVERHEAD_S = 120.0
WEBHOOK_MAX_BACKOFF_S = 6 * 3600
# An API key's public record, as `htbase keys new` prints it: its prefix and the sha256 of the key.
KEY_RECORD = re.compile(r"[0-9a-f]{8}:[0-9a-f]{64}")


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, never later."""


def setting(
    group: str,
    env: str,
    default: Any = MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | None = None,
    shown: str | None = None,
    empty_is_unset: bool = False,
) -> Any:
    """A ``Settings`` field read from ``env``. ``shown`` is the default as the README
    states it, where the value itself would not say it well. An empty variable leaves
    the default, except for text, where empty is a value (``TOPIC_PREFIX=`` is no
    prefix) unless ``empty_is_unset``."""
    if group not in GROUPS:
        raise ValueError(f"{env}: unknown group {group!r}")
    metadata = {"env": env, "doc": doc, "group": group, "shown": shown, "empty_is_unset": empty_is_unset}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _find_chromium() -> str:
    # The headless shell first: the same Blink, without a full browser's windowing and
    # compositing, so a capture costs well under half the CPU (README, bench/capture.py).
    for name in ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium"


@dataclass(frozen=True)
class Settings:
    service_role: str = setting(
        "process", "SERVICE_ROLE", "all-in-one", doc="`api`, `archiver`, `summarizer` or `all-in-one`"
    )
    archivers: tuple[str, ...] = setting(
        "process", "ARCHIVERS", ARCHIVERS, shown="all five", doc="which archivers this process runs (comma-separated)"
    )
    host: str = setting("process", "HOST", "127.0.0.1", doc="the address `htbase serve` listens on")
    port: int = setting("process", "PORT", 8080, doc="the port `htbase serve` listens on")
    api_keys_required: bool = setting(
        "api keys",
        "API_KEYS_REQUIRED",
        False,
        shown="off; on where `HOST` is not loopback and in a cloud role",
        doc="every request but health and the API's document needs a key, and the API refuses to start "
        "while none exists (keys are needed anyway once one was created)",
    )
    first_admin_key_record: str = setting(
        "api keys",
        "FIRST_ADMIN_KEY_RECORD",
        "",
        doc="`htbase migrate` adds this admin key unless its prefix exists: the record (`prefix:sha256`) "
        "that `htbase keys new` prints, never the key (the cloud's first key: terraform/README.md)",
    )
    submissions_per_minute: float = setting(
        "api keys",
        "SUBMISSIONS_PER_MINUTE",
        60.0,
        doc="submissions one key may make per minute in each API process (a token bucket; 0: no limit)",
    )
    submission_burst: int = setting(
        "api keys", "SUBMISSION_BURST", 20, doc="submissions one key may make at once before the rate applies"
    )
    htbase_url: str = setting(
        "client",
        "HTBASE_URL",
        "",
        shown="`http://127.0.0.1:$PORT`",
        doc="the htbase API the `htbase` command talks to",
    )
    htbase_api_key: str = setting("client", "HTBASE_API_KEY", "", doc="the API key the `htbase` command sends")
    worker_concurrency: int = setting(
        "process", "WORKER_CONCURRENCY", len(ARCHIVERS), doc="captures running at once in the embedded dispatcher"
    )
    web_workers: int = setting("process", "WEB_CONCURRENCY", 2, doc="API processes (gunicorn) with `SERVICE_ROLE=api`")
    log_level: str = setting("process", "LOG_LEVEL", "INFO", doc="the least severe level logged (any case)")
    log_format: str = setting(
        "process", "LOG_FORMAT", "pretty", doc="`pretty`, or `json` for Cloud Logging's structured format"
    )

    # SQLite embedded, Postgres for real
    database_url: str = setting(
        "ledger",
        "DATABASE_URL",
        "",
        shown="`sqlite:///data/htbase.db` (beside `LOCAL_STORAGE_PATH`)",
        doc="or `postgresql+pg8000://user:pass@host/db`",
    )
    instance_connection_name: str = setting(
        "ledger",
        "INSTANCE_CONNECTION_NAME",
        "",
        doc="Cloud SQL instance: connect through the Cloud SQL Python connector",
    )
    cloud_sql_ip_type: str = setting(
        "ledger", "CLOUD_SQL_IP_TYPE", "public", doc="`public`, `private` or `psc`: the instance address to use"
    )
    cloud_sql_iam_auth: bool = setting(
        "ledger",
        "CLOUD_SQL_IAM_AUTH",
        False,
        doc="IAM database authentication: log in as the service account, no password",
    )
    db_pool_size: int = setting(
        "ledger",
        "DB_POOL_SIZE",
        20,
        doc="the most Postgres connections this process opens (instances × pool ≤ `max_connections`)",
    )
    run_migrations: bool = setting(
        "ledger",
        "RUN_MIGRATIONS",
        True,
        doc="migrate the schema at start-up; off on Cloud Run, where the `migrate` job does it",
    )
    retention_days: int = setting(
        "ledger",
        "RETENTION_DAYS",
        0,
        shown="off",
        doc="housekeeping deletes snapshots older than this many days, keeping each item's newest (0: never)",
    )

    file_storage_provider: str = setting("files", "FILE_STORAGE_PROVIDER", "local", doc="`local` or `gcs`")
    local_storage_path: Path = setting(
        "files", "LOCAL_STORAGE_PATH", PROJECT_ROOT / "data" / "archives", doc="where local artifacts live"
    )
    gcs_bucket: str = setting("files", "GCS_BUCKET", "", doc="the GCS bucket (`FILE_STORAGE_PROVIDER=gcs`)")
    storage_emulator_host: str = setting("files", "STORAGE_EMULATOR_HOST", "", doc="the GCS emulator's endpoint")
    google_cloud_project: str = setting(
        "files",
        "GOOGLE_CLOUD_PROJECT",
        "",
        shown="the credentials' project in cloud roles",
        doc="the Google Cloud project (GCS, Cloud Logging, Pub/Sub's fallback)",
    )
    signed_url_service_account: str = setting(
        "files",
        "SIGNED_URL_SERVICE_ACCOUNT",
        "",
        doc="downloads redirect to GCS URLs this account signs through IAM (`signBlob`, no key file)",
    )

    capture_timeout_s: float = setting(
        "captures", "CAPTURE_TIMEOUT", 60.0, doc="seconds per capture (`options.timeout` overrides per request)"
    )
    max_capture_timeout_s: float = setting(
        "captures",
        "MAX_CAPTURE_TIMEOUT",
        300.0,
        doc=f"the longest `options.timeout`; with {PUSH_OVERHEAD_S:g} s to start Chromium and store, "
        f"under the {ACK_DEADLINE_S} s ack deadline",
    )
    max_task_capture_s: float = setting(
        "captures",
        "MAX_TASK_CAPTURE_SECONDS",
        600.0,
        doc="capture time one archiver may spend on a task over all its attempts (attempts × timeout); "
        "a timeout is retried once at most",
    )
    max_capture_bytes: int = setting(
        "captures",
        "MAX_CAPTURE_BYTES",
        50 * 1024 * 1024,
        doc="size limit of a page (decoded, with all it loads) and of an artifact",
    )
    import_captures_at_once: int = setting(
        "captures",
        "IMPORT_CAPTURES_AT_ONCE",
        10,
        doc="unfinished captures all imports together keep going at once; the rest wait their turn",
    )
    allow_private_urls: bool = setting(
        "captures",
        "ALLOW_PRIVATE_URLS",
        False,
        doc="test-only: let captures reach private and loopback addresses",
    )
    egress_allow_cidrs: tuple[str, ...] = setting(
        "captures", "EGRESS_ALLOW_CIDRS", (), doc="address ranges allowed even though private (comma-separated)"
    )
    chromium_path: str = setting(
        "captures",
        "CHROMIUM_PATH",
        factory=_find_chromium,
        empty_is_unset=True,
        shown="found on PATH",
        doc="the Chromium binary: chromium-headless-shell, else chromium",
    )
    singlefile_path: str = setting(
        "captures",
        "SINGLEFILE_PATH",
        str(PROJECT_ROOT / "node_modules" / ".bin" / "single-file"),
        empty_is_unset=True,
        doc="the SingleFile CLI",
    )
    # Settings() keeps the built-in inliner; from_env looks for the binary.
    monolith_path: str = setting(
        "captures",
        "MONOLITH_PATH",
        "",
        shown="found on PATH",
        doc="the `monolith` binary; none: the built-in inliner",
    )

    lease_s: float = setting(
        "delivery", "LEASE_SECONDS", 300.0, doc="how long a claimed capture is held before it may be taken over"
    )
    max_attempts: int = setting(
        "delivery", "MAX_ATTEMPTS", 5, doc="captures the ledger tries before failing an artifact"
    )
    max_delivery_attempts: int = setting(
        "delivery",
        "MAX_DELIVERY_ATTEMPTS",
        5,
        doc="pushes a subscription makes before dead-lettering (5..100, Pub/Sub's limits)",
    )
    retry_backoff_s: float = setting(
        "delivery", "RETRY_BACKOFF_SECONDS", 1.0, doc="the first wait before a delivery is retried; it doubles"
    )
    sweep_interval_s: float = setting(
        "delivery",
        "SWEEP_INTERVAL_SECONDS",
        30.0,
        doc="how often the housekeeper sweeps expired leases and republishes the outbox",
    )

    broker: str = setting(
        "messaging",
        "BROKER",
        "embedded",
        shown="`embedded`; `pubsub` with `PUBSUB_EMULATOR_HOST`",
        doc="`embedded` (an in-process dispatcher) or `pubsub` (Google Pub/Sub or its emulator)",
    )
    pubsub_project_id: str = setting(
        "messaging",
        "PUBSUB_PROJECT_ID",
        "htbase-local",
        shown="`GOOGLE_CLOUD_PROJECT`, else `htbase-local`",
        doc="the project of the topics",
    )
    pubsub_emulator_host: str = setting(
        "messaging", "PUBSUB_EMULATOR_HOST", "", doc="the Pub/Sub emulator's `host:port`"
    )
    topic_prefix: str = setting("messaging", "TOPIC_PREFIX", "htbase-", doc="the start of every topic's name")
    tasks_location: str = setting("messaging", "TASKS_LOCATION", "us-central1", doc="the Cloud Tasks queues' region")
    cloud_tasks_emulator_host: str = setting(
        "messaging", "CLOUD_TASKS_EMULATOR_HOST", "", doc="the Cloud Tasks emulator's `host:port`"
    )

    # A Google OIDC token (cloud) or a shared token (emulator mode)
    push_auth_token: str = setting(
        "push auth", "PUSH_AUTH_TOKEN", "", doc="the shared token pushes carry in emulator mode (`?token=`)"
    )
    push_audience: str = setting(
        "push auth", "PUSH_AUDIENCE", "", doc="the audience of Google's OIDC push tokens (cloud)"
    )
    push_service_account: str = setting(
        "push auth", "PUSH_SERVICE_ACCOUNT", "", doc="the push subscriptions' identity the OIDC tokens must name"
    )
    push_allowed_service_accounts: tuple[str, ...] = setting(
        "push auth",
        "PUSH_ALLOWED_SERVICE_ACCOUNTS",
        (),
        doc="more identities whose OIDC tokens are accepted, e.g. Cloud Scheduler's (comma-separated)",
    )
    oidc_certs_url: str = setting(
        "push auth",
        "OIDC_CERTS_URL",
        "https://www.googleapis.com/oauth2/v1/certs",
        empty_is_unset=True,
        doc="where Google's token-signing certificates come from",
    )
    tasks_service_account: str = setting(
        "push auth",
        "TASKS_SERVICE_ACCOUNT",
        "",
        doc="the identity Cloud Tasks signs its OIDC tokens as, for `PUSH_AUDIENCE` (cloud)",
    )

    # Standard Webhooks: a task's one delivery when it ends
    webhook_secret: str = setting(
        "webhooks",
        "WEBHOOK_SECRET",
        "",
        shown="none: `webhook_url` refused",
        doc="the signing key, `whsec_` + base64 (from Secret Manager in the cloud)",
    )
    webhook_delivery_url: str = setting(
        "webhooks",
        "WEBHOOK_DELIVERY_URL",
        "",
        doc="the `webhooks` service that Cloud Tasks hands deliveries to (`BROKER=pubsub`)",
    )
    webhook_timeout_s: float = setting(
        "webhooks", "WEBHOOK_TIMEOUT", 10.0, doc="seconds a receiver has to answer; redirects are not followed"
    )
    webhook_max_attempts: int = setting(
        "webhooks",
        "WEBHOOK_MAX_ATTEMPTS",
        10,
        doc="deliveries tried on network errors, 5xx and 429; the wait starts at `RETRY_BACKOFF_SECONDS` "
        f"and quadruples up to {WEBHOOK_MAX_BACKOFF_S // 3600} h",
    )

    # Best effort; off when no project is set
    firestore_project_id: str = setting(
        "replica", "FIRESTORE_PROJECT_ID", "", shown="off", doc="turns the Firestore copy of task documents on"
    )
    firestore_emulator_host: str = setting(
        "replica", "FIRESTORE_EMULATOR_HOST", "", doc="the Firestore emulator's `host:port`"
    )
    firestore_collection: str = setting(
        "replica", "FIRESTORE_COLLECTION", "tasks", doc="the collection of task documents"
    )

    llm_providers: tuple[str, ...] = setting(
        "summaries", "LLM_PROVIDER", ("extractive",), doc="a provider or a fallback chain, e.g. `openai,extractive`"
    )
    llm_base_url: str = setting("summaries", "LLM_BASE_URL", "", doc="the OpenAI-compatible or TGI endpoint")
    llm_model: str = setting("summaries", "LLM_MODEL", "", doc="the model the endpoint serves")
    llm_api_key: str = setting("summaries", "LLM_API_KEY", "", doc="the endpoint's API key")
    llm_timeout_s: float = setting("summaries", "LLM_TIMEOUT", 60.0, doc="seconds per model request")
    llm_requests_per_minute: int = setting(
        "summaries", "LLM_REQUESTS_PER_MINUTE", 60, doc="model requests per process and minute (0: no limit)"
    )
    llm_context_tokens: int = setting(
        "summaries", "LLM_CONTEXT_TOKENS", 8192, doc="the model's context; longer articles are chunked"
    )
    llm_breaker_failures: int = setting(
        "summaries",
        "LLM_BREAKER_FAILURES",
        3,
        doc="consecutive failures before a provider is skipped (0: never)",
    )
    llm_breaker_cooldown_s: float = setting(
        "summaries", "LLM_BREAKER_COOLDOWN", 60.0, doc="seconds a failing provider is skipped"
    )
    summary_timeout_s: float = setting(
        "summaries",
        "SUMMARY_TIMEOUT",
        300.0,
        doc=f"seconds one summary may take in all; no model call starts that could end later "
        f"(with {PUSH_OVERHEAD_S:g} s, under the {ACK_DEADLINE_S} s ack deadline)",
    )

    telemetry_exporter: str = setting(
        "telemetry",
        "TELEMETRY_EXPORTER",
        "none",
        doc="where traces and metrics go: `none`, `otlp` (a collector at `OTLP_ENDPOINT`) or `gcp` "
        "(Cloud Trace and Cloud Monitoring)",
    )
    otlp_endpoint: str = setting(
        "telemetry",
        "OTLP_ENDPOINT",
        "http://127.0.0.1:4318",
        empty_is_unset=True,
        doc="the OTLP/HTTP collector (`/v1/traces` and `/v1/metrics` are added)",
    )
    trace_sample_ratio: float = setting(
        "telemetry",
        "TRACE_SAMPLE_RATIO",
        1.0,
        doc="the share of new traces recorded (0..1); a continued trace follows its parent's choice",
    )
    metrics_export_interval_s: float = setting(
        "telemetry",
        "METRICS_EXPORT_INTERVAL",
        60.0,
        doc="seconds between metric exports to a collector or Cloud Monitoring",
    )
    prometheus_metrics: bool = setting(
        "telemetry",
        "PROMETHEUS_METRICS",
        True,
        doc="serve this process's metrics as Prometheus text at `/metrics` (behind the API's access)",
    )

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
        if self.first_admin_key_record and not KEY_RECORD.fullmatch(self.first_admin_key_record):
            raise ConfigError("FIRST_ADMIN_KEY_RECORD must be `prefix:sha256` as `htbase keys new` prints it")
        if self.log_format not in ("json", "pretty"):
            raise ConfigError("LOG_FORMAT must be 'json' or 'pretty'")
        if self.cloud_sql_ip_type not in CLOUD_SQL_IP_TYPES:
            raise ConfigError(f"CLOUD_SQL_IP_TYPE must be one of {CLOUD_SQL_IP_TYPES}, got {self.cloud_sql_ip_type!r}")
        if self.db_pool_size < 1:
            raise ConfigError("DB_POOL_SIZE must be at least 1")
        if self.submissions_per_minute < 0 or self.submission_burst < 1:
            raise ConfigError("SUBMISSIONS_PER_MINUTE must be 0 (no limit) or more, SUBMISSION_BURST at least 1")
        if self.retention_days < 0:
            raise ConfigError("RETENTION_DAYS must be 0 (off) or a number of days")
        if self.webhook_max_attempts < 1:
            raise ConfigError("WEBHOOK_MAX_ATTEMPTS must be at least 1")
        _ = self.webhook_key  # a malformed secret fails at start-up, not at the first delivery
        if self.telemetry_exporter not in TELEMETRY_EXPORTERS:
            raise ConfigError(
                f"TELEMETRY_EXPORTER must be one of {TELEMETRY_EXPORTERS}, got {self.telemetry_exporter!r}"
            )
        if not 0 <= self.trace_sample_ratio <= 1:
            raise ConfigError("TRACE_SAMPLE_RATIO must be within 0..1")
        if self.metrics_export_interval_s <= 0:
            raise ConfigError("METRICS_EXPORT_INTERVAL must be a positive number of seconds")
        self._check_deadlines()
        if self.service_role != "all-in-one":
            self._check_shared_backends()
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.local_storage_path.parent / 'htbase.db'}")

    @property
    def webhook_key(self) -> bytes:
        """The signing key's bytes: WEBHOOK_SECRET is ``whsec_`` and the key in base64."""
        if not self.webhook_secret:
            return b""
        encoded = self.webhook_secret.removeprefix("whsec_")
        try:
            key = base64.b64decode(encoded, validate=True) if encoded != self.webhook_secret else b""
        except binascii.Error:
            key = b""
        if not key:
            raise ConfigError(
                "WEBHOOK_SECRET must be whsec_ followed by the key in base64, e.g. whsec_$(openssl rand -base64 32)"
            )
        return key

    @property
    def webhooks_enabled(self) -> bool:
        """Whether a webhook can be signed and sent: a key, and in a deployment the service that sends it."""
        return bool(self.webhook_secret) and (self.broker == "embedded" or bool(self.webhook_delivery_url))

    def _check_deadlines(self) -> None:
        """Every push answers within the ack deadline, or Pub/Sub delivers it again meanwhile."""
        capture_s = max(self.capture_timeout_s, self.max_capture_timeout_s)
        if capture_s + PUSH_OVERHEAD_S > ACK_DEADLINE_S:
            raise ConfigError(
                f"CAPTURE_TIMEOUT and MAX_CAPTURE_TIMEOUT ({capture_s:g} s) plus {PUSH_OVERHEAD_S:g} s to start "
                f"Chromium and store the capture must stay within the {ACK_DEADLINE_S} s ack deadline"
            )
        if self.summary_timeout_s + PUSH_OVERHEAD_S > ACK_DEADLINE_S:
            raise ConfigError(
                f"SUMMARY_TIMEOUT ({self.summary_timeout_s:g} s) plus {PUSH_OVERHEAD_S:g} s must stay within "
                f"the {ACK_DEADLINE_S} s ack deadline"
            )
        if self.llm_timeout_s > self.summary_timeout_s:
            raise ConfigError("LLM_TIMEOUT must not exceed SUMMARY_TIMEOUT: not one model call could be made")

    def _check_shared_backends(self) -> None:
        """A process of a distributed deployment (one of many instances) never falls back to
        what only works in one process: the in-process dispatcher, a SQLite file of its own."""
        role = f"SERVICE_ROLE={self.service_role}"
        if self.broker != "pubsub":
            raise ConfigError(
                f"{role} needs Pub/Sub: set BROKER=pubsub (Google Cloud) or PUBSUB_EMULATOR_HOST; "
                "the embedded dispatcher only exists inside SERVICE_ROLE=all-in-one"
            )
        if not self.database_url.startswith("postgresql"):
            found = f"not {self.database_url.split(':', 1)[0]}" if self.database_url else "but DATABASE_URL is unset"
            raise ConfigError(
                f"{role} needs the shared PostgreSQL ledger, {found}: set DATABASE_URL=postgresql+pg8000://"
                "user:pass@host/db (user@/db with INSTANCE_CONNECTION_NAME for Cloud SQL)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        types = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or (raw == "" and (types[f.name] is not str or f.metadata["empty_is_unset"])):
                continue  # the declared default
            values[f.name] = _parse(f.metadata["env"], types[f.name], raw)

        # The few settings whose default depends on other variables or on this machine.
        if not env.get("BROKER"):
            values["broker"] = "pubsub" if env.get("PUBSUB_EMULATOR_HOST") else "embedded"
        pubsub_project_id = env.get("PUBSUB_PROJECT_ID") or env.get("GOOGLE_CLOUD_PROJECT")
        if pubsub_project_id:
            values["pubsub_project_id"] = pubsub_project_id
        values["monolith_path"] = env.get("MONOLITH_PATH") or shutil.which("monolith") or ""
        if "log_level" in values:
            values["log_level"] = values["log_level"].upper()
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed (tests and the CLI use this)."""
        return replace(self, **changes)


def _parse(name: str, kind: Any, raw: str) -> Any:
    """The value of the variable ``name`` as a ``kind``; ``ConfigError`` names the variable."""
    if kind is str:
        return raw
    if kind is Path:
        return Path(raw)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if kind is bool:
        word = raw.strip().lower()
        if word not in TRUE_WORDS + FALSE_WORDS:
            raise ConfigError(f"{name} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, got {raw!r}")
        return word in TRUE_WORDS
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    raise TypeError(f"{name}: settings of type {kind} are not supported")


def _shown_default(f: Field) -> str:
    """The default as the README states it."""
    if f.metadata["shown"] is not None:
        return f.metadata["shown"]
    value = f.default
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        value = ",".join(value)
    elif isinstance(value, (Path, str)) and Path(value).is_relative_to(PROJECT_ROOT):
        value = Path(value).relative_to(PROJECT_ROOT)
    elif isinstance(value, float):
        value = f"{value:g}"
    return f"`{value}`" if value != "" else ""


def markdown_table() -> str:
    """The README's table of every setting, grouped by subsystem."""
    rows = [("variable", "default", "meaning"), ("---", "---", "---")]
    for group in GROUPS:
        rows.append((f"**{group.capitalize()}**", "", ""))
        rows += [
            (f"`{f.metadata['env']}`", _shown_default(f), f.metadata["doc"])
            for f in fields(Settings)
            if f.metadata["group"] == group
        ]
    return "".join("|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|\n" for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m htbase.config", description=__doc__)
    parser.add_argument("--markdown", action="store_true", required=True, help="print the README's table of settings")
    parser.parse_args(argv)
    print(markdown_table(), end="")


if __name__ == "__main__":
    main()
