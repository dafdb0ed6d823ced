"""Ledger tables. Postgres is the source of truth; SQLite is the embedded default.

A task is one client request. A batch request is a parent task whose children
are ordinary single-URL tasks, so every artifact belongs to exactly one task
and one URL, and its storage key ``{task_id}/{archiver}.{ext}`` never collides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    # Naive UTC everywhere: SQLite keeps no time zone, and both engines must compare alike.
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


class Item(Base):
    """A saved URL. Clients may name it (item_id); re-captures reuse it."""

    __tablename__ = "items"

    item_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    url_hash: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]


class Task(Base):
    __tablename__ = "tasks"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "single" or "batch"
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("tasks.task_id"), index=True)
    item_id: Mapped[str | None] = mapped_column(ForeignKey("items.item_id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64), default="")
    webhook_url: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)
    cancelled_at: Mapped[datetime | None]
    # The summary this task's article maps to (summaries.cache_key), once requested.
    summary_key: Mapped[str | None] = mapped_column(String(64))

    item: Mapped[Item | None] = relationship(lazy="joined")
    artifacts: Mapped[list[Artifact]] = relationship(back_populates="task", order_by="Artifact.id")
    webhook: Mapped[WebhookDelivery | None] = relationship(lazy="joined")

    def artifact(self, archiver: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.archiver == archiver), None)


class Artifact(Base):
    """One capture of one task's URL by one archiver: a small state machine with a lease.

    pending -> processing (claimed under a lease) -> success | failed
    A transient failure returns it to pending; an expired lease lets another
    delivery claim it again. ``attempts`` counts claims.
    """

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("task_id", "archiver", name="uq_artifacts_task_archiver"),
        Index("ix_artifacts_status_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.task_id"))
    archiver: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    storage_key: Mapped[str | None] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    content_type: Mapped[str | None] = mapped_column(String(128))
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None]
    # When a pending artifact that failed for now is due to be tried again (the broker's backoff).
    next_attempt_at: Mapped[datetime | None]

    task: Mapped[Task] = relationship(back_populates="artifacts")


class Summary(Base):
    """A summary of one article text by one model and prompt version.

    ``cache_key`` hashes (text sha256, model id, prompt version): the same
    article is never summarized twice by the same model and prompt. ``status``
    is ``pending`` until the first result, then ``success`` or ``failed``.
    """

    __tablename__ = "summaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cache_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    prompt_version: Mapped[str] = mapped_column(String(32))
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    raw_text: Mapped[str | None] = mapped_column(Text)
    # Deliveries of a summarize request that reached the summarizer since the last result: the
    # push envelope of the emulator carries no deliveryAttempt, so this says which one is the last.
    deliveries: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class OutboxMessage(Base):
    """A message to publish, written in the same transaction as the work it announces."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    data: Mapped[str] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    # Set when the broker refused the message for good (too large, invalid): never retried.
    failed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class ReplicaPending(Base):
    """A task whose Firestore document could not be written: one row per task, however often it failed.

    No snapshot is kept: a retry renders the task's state as it is then, so an
    old state can never overwrite a newer one.
    """

    __tablename__ = "replica_pending"

    task_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)


class WebhookDelivery(Base):
    """The one webhook a task (or a batch) sends once it has ended, tried until its receiver takes it.

    pending -> delivered | failed. ``id`` is the ``webhook-id`` every attempt carries; an
    attempt holds the row under a lease, so two messages never send it at once.
    """

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.task_id"), unique=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None]  # the receiver's last HTTP status
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class Schedule(Base):
    """An item captured again every ``every_s`` seconds: housekeeping adds a snapshot when one is due."""

    __tablename__ = "schedules"

    item_id: Mapped[str] = mapped_column(ForeignKey("items.item_id"), primary_key=True)
    every_s: Mapped[int]
    archivers: Mapped[list[Any]] = mapped_column(default=list)
    next_run_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]


class PendingDeletion(Base):
    """Stored files whose rows are gone, removed after those rows commit; housekeeping retries a
    removal that failed, so a row never points at a missing file and no file outlives its row for long."""

    __tablename__ = "pending_deletions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    prefix: Mapped[str] = mapped_column(Text)  # a task's files: "{task_id}/"
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime] = mapped_column(index=True)


class ApiKey(Base):
    """A client's API key. Only the sha256 of the key is kept; ``prefix`` (shown in the key) names it.

    A revoked key keeps its row: the list shows it, and auth stays on once any key was made.
    """

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
