"""The API's request and response models: the one source of both validation and the OpenAPI document.

flask-openapi3 validates each handler's ``path``, ``query`` and ``body`` against these
models and writes them into ``/api/v2/openapi.json``; a refusal answers 400 with the code
of the field it names (``errors.validation_error``). Checks that depend on a setting (the
enabled archivers, ``MAX_CAPTURE_TIMEOUT``) stay in the handlers. Response models document
what ``infra.documents`` renders; they allow more properties, so a field added there never
breaks a client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictStr
from pydantic_core import PydanticCustomError

from htbase.messages import ARCHIVERS
from htbase.urls import MAX_URL_LENGTH, InvalidURL, validate_url

MAX_BATCH = 100
MAX_OFFSET = 2**31 - 1  # beyond it a database refuses the number instead of finding nothing
# Ids travel in URL paths (/archives/{item_id}/all): letters, digits and marks that need no
# escaping there, a letter or digit first (so "." and ".." are never ids). Task ids are UUIDs.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._~:@+=-]{0,199}$"


def _refused(code: str, reason: str) -> PydanticCustomError:
    return PydanticCustomError(code, "{reason}", {"reason": reason})


def _valid_url(value: str) -> str:
    try:
        value.encode("utf-8")  # JSON can carry a lone surrogate, which no database stores
        return validate_url(value)
    except UnicodeEncodeError:
        raise _refused("invalid", "not valid Unicode") from None
    except InvalidURL as exc:
        raise _refused("invalid", str(exc)) from None


def _known_archiver(name: str) -> str:
    if name not in ARCHIVERS:
        raise _refused("unknown_archiver", f"unknown archiver {name[:40]!r}; known: {list(ARCHIVERS)}")
    return name


def _at_most_a_batch(items: list) -> list:
    if len(items) > MAX_BATCH:
        raise _refused("batch_too_large", f"a batch holds at most {MAX_BATCH} items, got {len(items)}")
    return items


Url = Annotated[
    StrictStr,
    Field(
        max_length=MAX_URL_LENGTH,
        examples=["https://example.org/"],
        description="an http(s) URL; without a scheme, https:// is meant",
    ),
    AfterValidator(_valid_url),
]
Id = Annotated[StrictStr, Field(pattern=ID_PATTERN, description="a task id, or a client's item id")]
Archiver = Annotated[StrictStr, Field(json_schema_extra={"enum": list(ARCHIVERS)}), AfterValidator(_known_archiver)]
Archivers = Annotated[
    list[Archiver],
    Field(min_length=1, description="absent or null: every enabled archiver"),
    AfterValidator(lambda names: list(dict.fromkeys(names))),
]


class CaptureOptions(BaseModel):
    """Only known options: they travel in every message of the task."""

    model_config = ConfigDict(extra="forbid")
    timeout: (
        Annotated[
            StrictFloat,
            Field(gt=0, allow_inf_nan=False, description="seconds per capture, at most MAX_CAPTURE_TIMEOUT"),
        ]
        | None
    ) = None


class ArchiveRequest(BaseModel):
    url: Url
    item_id: Id | None = None
    archivers: Archivers | None = None
    options: CaptureOptions | None = None
    webhook_url: Url | None = None


class BatchEntry(BaseModel):
    url: Url
    item_id: Id | None = None


class BatchRequest(BaseModel):
    items: Annotated[
        list[BatchEntry],
        Field(min_length=1, json_schema_extra={"maxItems": MAX_BATCH}),
        AfterValidator(_at_most_a_batch),
    ]
    archivers: Archivers | None = None
    options: CaptureOptions | None = None
    webhook_url: Url | None = None


class SummarizeBody(BaseModel):
    force: StrictBool = Field(False, description="make a new summary even if one exists")


class TaskPath(BaseModel):
    task_id: Id


class ArchivePath(BaseModel):
    archive_id: Id


class ArchiveFilePath(BaseModel):
    archive_id: Id
    archiver: Annotated[str, Field(description=f"one of {', '.join(ARCHIVERS)}; another answers 404")]


class DownloadQuery(BaseModel):
    format: Literal["txt"] | None = Field(
        None, description="a format stored beside the main file: `txt`, readability's plain text"
    )
    at: datetime | None = Field(
        None,
        description="for an item id: the newest capture taken at or before this time (ISO 8601; without a zone, UTC)",
    )


class KeyRequest(BaseModel):
    name: Annotated[
        StrictStr,
        Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$", description="who or what holds it"),
    ]
    scope: Literal["read", "write", "admin"] = Field(
        description="read: GET; write: also submit and summarize; admin: also delete and manage keys"
    )


class KeyPath(BaseModel):
    prefix: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{8}$", description="the 8 characters after `htb_`")]


class TaskListQuery(BaseModel):
    limit: int = Field(20, description="page size, held to 1..100")
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    status: Literal["pending", "processing", "success", "partial", "failed", "cancelled"] | None = None
    item_id: Id | None = Field(None, description="that item's snapshots (a batch's tasks among them)")
    since: datetime | None = Field(None, description="created at or after (ISO 8601; without a zone, UTC)")


# Responses


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Accepted(BaseModel):
    task_id: str
    status: Literal["pending"]
    status_url: str
    item_id: str


class BatchChild(BaseModel):
    task_id: str
    item_id: str
    url: str


class BatchAccepted(BaseModel):
    task_id: str
    status: Literal["pending"]
    status_url: str
    tasks: list[BatchChild]


class StoredFile(BaseModel):
    size: int | None
    sha256: str | None
    content_type: str | None
    url: str = Field(description="where the API serves the file")
    duration_ms: int | None


class Subtask(BaseModel):
    status: str
    attempts: int
    error: str | None = None
    next_attempt_at: datetime | None = Field(None, description="waiting for a retry: when it is due")
    artifact: StoredFile | None = None
    metadata: dict[str, Any] | None = None


class WebhookState(BaseModel):
    status: Literal["waiting", "pending", "delivered", "failed"] = Field(
        description="waiting: the task has not ended; pending: being delivered"
    )
    attempts: int
    id: str | None = Field(None, description="the `webhook-id` every attempt carries")
    last_status: int | None = Field(None, description="the receiver's last HTTP status; null: no answer")
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class TaskDocument(BaseModel):
    task_id: str
    kind: Literal["single", "batch"]
    status: Literal["pending", "processing", "success", "partial", "failed", "cancelled"]
    progress: float
    created_at: datetime
    completed_at: datetime | None
    status_url: str
    request_id: str | None = None
    url: str | None = None
    item_id: str | None = None
    title: str | None = None
    subtasks: dict[str, Subtask] | None = None
    summary_url: str | None = None
    items: list[TaskDocument] | None = Field(None, description="a batch's tasks")
    items_count: int | None = Field(None, description="in a list: how many tasks a batch holds")
    items_url: str | None = Field(None, description="in a list: where a batch's tasks are shown")
    webhook: WebhookState | None = Field(None, description="with a `webhook_url`: how its delivery went")


class TaskList(BaseModel):
    tasks: list[TaskDocument]
    total: int
    limit: int
    offset: int
    next: str | None


class SummaryAccepted(BaseModel):
    task_id: str
    status: Literal["pending"]
    summary_url: str
    force: bool


class SummaryDocument(BaseModel):
    """The summary's fields (lede, summary, key_points, tags, language, token counts, timings) and its state."""

    model_config = ConfigDict(extra="allow")
    task_id: str
    status: str
    model: str | None
    prompt_version: str | None
    created_at: datetime | None
    updated_at: datetime | None
    error: str | None = None


class KeyView(BaseModel):
    prefix: str
    name: str
    scope: Literal["read", "write", "admin"]
    created_at: datetime
    revoked_at: datetime | None


class NewKey(KeyView):
    key: str = Field(description="the key itself: shown this once, never stored")


class KeyList(BaseModel):
    keys: list[KeyView]


class Health(BaseModel):
    status: Literal["ok"]
    role: str
    archivers: list[str]
