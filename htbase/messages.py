"""Every message and every state, defined once.

The API, the embedded dispatcher, the push handlers and the ledger all import
from here. A message travels as JSON in the ``data`` of a Pub/Sub push
envelope; the embedded dispatcher builds exactly the envelope Pub/Sub would.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

ARCHIVERS: tuple[str, ...] = ("singlefile", "monolith", "readability", "pdf", "screenshot")


class ArtifactStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (ArtifactStatus.SUCCESS, ArtifactStatus.FAILED, ArtifactStatus.CANCELLED)


class TaskStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    SUCCESS = "success"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


def derive_task_status(statuses: list[ArtifactStatus]) -> tuple[TaskStatus, float]:
    """A task's status and progress (0..1), from its artifacts' statuses."""
    if not statuses:
        return TaskStatus.PENDING, 0.0
    done = [s for s in statuses if s.terminal]
    progress = len(done) / len(statuses)
    if len(done) < len(statuses):
        if all(s is ArtifactStatus.PENDING for s in statuses):
            return TaskStatus.PENDING, progress
        return TaskStatus.PROCESSING, progress
    if all(s is ArtifactStatus.CANCELLED for s in statuses):
        return TaskStatus.CANCELLED, 1.0
    if all(s is ArtifactStatus.SUCCESS for s in statuses):
        return TaskStatus.SUCCESS, 1.0
    if any(s is ArtifactStatus.SUCCESS for s in statuses):
        return TaskStatus.PARTIAL, 1.0
    if any(s is ArtifactStatus.CANCELLED for s in statuses):
        return TaskStatus.CANCELLED, 1.0
    return TaskStatus.FAILED, 1.0


class MessageError(ValueError):
    """A push envelope or message that can never be processed (answer 4xx, don't retry)."""


def _require_str(payload: dict, name: str, optional: bool = False) -> str:
    value = payload.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str) or (not value and not optional):
        raise MessageError(f"field {name!r} must be a non-empty string")
    if "\x00" in value or not _encodable(value):
        raise MessageError(f"field {name!r} holds characters no database stores")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")  # fails on a lone surrogate, which JSON can carry
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class ArchiveRequest:
    """Capture one URL with one archiver for one task."""

    task_id: str
    item_id: str
    url: str
    archiver: str
    options: dict[str, Any] = field(default_factory=dict)
    request_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ArchiveRequest:
        payload = _json_object(data)
        archiver = _require_str(payload, "archiver")
        if archiver not in ARCHIVERS:
            raise MessageError(f"unknown archiver {archiver!r}")
        options = payload.get("options")
        options = {} if options is None else options
        if not isinstance(options, dict):
            raise MessageError("field 'options' must be an object")
        return cls(
            task_id=_require_str(payload, "task_id"),
            item_id=_require_str(payload, "item_id"),
            url=_require_str(payload, "url"),
            archiver=archiver,
            options=options,
            request_id=_require_str(payload, "request_id", optional=True),
        )


@dataclass(frozen=True)
class SummarizeRequest:
    """Summarize the readable article captured for a task."""

    task_id: str
    force: bool = False
    request_id: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SummarizeRequest:
        payload = _json_object(data)
        force = payload.get("force", False)
        if not isinstance(force, bool):
            raise MessageError("field 'force' must be a boolean")
        return cls(
            task_id=_require_str(payload, "task_id"),
            force=force,
            request_id=_require_str(payload, "request_id", optional=True),
        )


@dataclass(frozen=True)
class WebhookRequest:
    """Try a task's webhook delivery, if an attempt is due."""

    delivery_id: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> WebhookRequest:
        return cls(delivery_id=_require_str(_json_object(data), "delivery_id"))


def parse_request(data: bytes) -> ArchiveRequest | SummarizeRequest | WebhookRequest:
    """Any work message (as the dead-letter topic gets them): an archive request names its archiver,
    a webhook attempt its delivery, a summarize request neither."""
    payload = _json_object(data)
    if "archiver" in payload:
        return ArchiveRequest.from_json(data)
    if "delivery_id" in payload:
        return WebhookRequest.from_json(data)
    return SummarizeRequest.from_json(data)


def _json_object(data: bytes) -> dict:
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than any message
        raise MessageError(f"message data is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise MessageError("message data must be a JSON object")
    return payload


# --- Pub/Sub push envelope --------------------------------------------------


@dataclass(frozen=True)
class PushMessage:
    data: bytes
    attributes: dict[str, str]
    message_id: str
    publish_time: str
    subscription: str
    delivery_attempt: int | None


def build_push_envelope(
    data: bytes,
    attributes: dict[str, str] | None = None,
    *,
    subscription: str,
    message_id: str | None = None,
    delivery_attempt: int | None = None,
) -> dict:
    """The JSON body Pub/Sub POSTs to a push endpoint."""
    message_id = message_id or uuid.uuid4().hex
    publish_time = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    envelope: dict[str, Any] = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": dict(attributes or {}),
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": publish_time,
            "publish_time": publish_time,
        },
        "subscription": subscription,
    }
    if delivery_attempt is not None:
        envelope["deliveryAttempt"] = delivery_attempt
    return envelope


def parse_push_envelope(body: Any) -> PushMessage:
    """Validate a push body; ``deliveryAttempt`` is optional (the emulator never sends it)."""
    if not isinstance(body, dict):
        raise MessageError("push body must be a JSON object")
    message = body.get("message")
    if not isinstance(message, dict):
        raise MessageError("push body has no 'message' object")
    raw = message.get("data")
    if not isinstance(raw, str) or not raw:
        raise MessageError("message has no base64 'data'")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise MessageError("message 'data' is not valid base64") from None
    attributes = message.get("attributes")
    attributes = {} if attributes is None else attributes
    if not isinstance(attributes, dict):
        raise MessageError("message 'attributes' must be an object")
    attempt = body.get("deliveryAttempt")
    if attempt is not None and not isinstance(attempt, int):
        raise MessageError("'deliveryAttempt' must be an integer")
    return PushMessage(
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        publish_time=str(message.get("publishTime") or message.get("publish_time") or ""),
        subscription=str(body.get("subscription") or ""),
        delivery_attempt=attempt,
    )
