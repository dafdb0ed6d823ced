"""Who this process is on Google Cloud: its project and its service account.

Cloud Run sets no ``GOOGLE_CLOUD_PROJECT`` and mounts no key file: both the
project and the credentials come from google-auth's application default
credentials (there, the metadata server). Only a cloud role asks, and only when
it talks to Google itself: embedded and emulator runs never make the call.
"""

from __future__ import annotations

import threading
from dataclasses import fields

import google.auth
from google.auth.credentials import Credentials
from google.auth.transport.requests import Request

from htbase.config import ConfigError, Settings

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
# What PUBSUB_PROJECT_ID is when neither it nor GOOGLE_CLOUD_PROJECT was set.
_PUBSUB_PROJECT_UNSET = next(f.default for f in fields(Settings) if f.name == "pubsub_project_id")

_lock = threading.Lock()
_credentials: Credentials | None = None


def uses_google(settings: Settings) -> bool:
    """A cloud role with no emulator configured: it publishes, logs and stores on Google Cloud."""
    emulated = settings.pubsub_emulator_host or settings.storage_emulator_host or settings.firestore_emulator_host
    return settings.service_role != "all-in-one" and not emulated


def with_project(settings: Settings) -> Settings:
    """``settings`` with the project filled in from the credentials when a cloud role left it unset."""
    if settings.google_cloud_project or not uses_google(settings):
        return settings
    try:
        _, project = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.DefaultCredentialsError as exc:
        raise ConfigError(f"GOOGLE_CLOUD_PROJECT is unset and google-auth found no credentials: {exc}") from None
    if not project:
        raise ConfigError("GOOGLE_CLOUD_PROJECT is unset and the default credentials name no project")
    changes = {"google_cloud_project": project}
    if settings.pubsub_project_id == _PUBSUB_PROJECT_UNSET:
        changes["pubsub_project_id"] = project
    return settings.with_(**changes)


def _default() -> Credentials:
    global _credentials
    with _lock:
        if _credentials is None:
            _credentials, _ = google.auth.default(scopes=SCOPES)
        return _credentials


def credentials() -> Credentials:
    """The process's default credentials, refreshed when their token is missing or about to expire."""
    found = _default()
    with _lock:
        if not found.valid:
            found.refresh(Request())
    return found


def service_account_email() -> str:
    """The service account this process runs as."""
    email = getattr(_default(), "service_account_email", "")
    if email == "default":  # Cloud Run's credentials learn their email with their first token
        email = getattr(credentials(), "service_account_email", "")
    if not email or email == "default":
        raise ConfigError("the default credentials are not a service account's; set the user in DATABASE_URL")
    return email
