"""The outbox: messages written in the same transaction as the work they announce.

Every write that announces work (a new task, a summary request, a republish)
adds its rows here inside its own transaction, so a message is never lost
between the database and the broker; the relay (infra/relay.py) publishes
them after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Engine, Table, func, insert, select, update
from sqlalchemy.orm import Session

from htbase.messages import ArchiveRequest, SummarizeRequest, WebhookRequest
from htbase.topology import SUMMARIZE, WEBHOOKS, archive_topic
from infra.db import new_session
from infra.models import OutboxMessage, utcnow
from infra.telemetry import message_context

OUTBOX = cast(Table, OutboxMessage.__table__)
# The attribute that holds a message back until its time (ISO 8601, UTC).
SCHEDULE_TIME = "schedule_time"


@dataclass(frozen=True)
class Outgoing:
    topic: str  # logical: "archive-pdf", "summarize"; the publisher maps it to a real topic
    data: bytes
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    data: bytes
    attributes: dict[str, str]


def archive_outgoing(request: ArchiveRequest) -> Outgoing:
    return Outgoing(
        archive_topic(request.archiver), request.to_json(), {"task_id": request.task_id, "archiver": request.archiver}
    )


def summarize_outgoing(request: SummarizeRequest) -> Outgoing:
    return Outgoing(SUMMARIZE, request.to_json(), {"task_id": request.task_id})


def webhook_outgoing(request: WebhookRequest, due: datetime | None = None) -> Outgoing:
    """A webhook attempt; ``due`` (naive UTC) holds it back until then (Cloud Tasks' schedule time).
    ``key`` names this one enqueue, so a republished row is one task, and a new enqueue another."""
    attributes = {"delivery_id": request.delivery_id, "key": uuid.uuid4().hex}
    if due is not None:
        attributes[SCHEDULE_TIME] = due.isoformat() + "Z"
    return Outgoing(WEBHOOKS, request.to_json(), attributes)


def schedule_time(attributes: dict[str, str]) -> datetime | None:
    """When a message is due (aware UTC), if it was held back."""
    due = attributes.get(SCHEDULE_TIME)
    return datetime.fromisoformat(due.replace("Z", "+00:00")) if due else None


def announced_artifact(row: OutboxRow) -> tuple[str, str] | None:
    """The (task_id, archiver) an archive message announces; None for other messages."""
    task_id, archiver = row.attributes.get("task_id"), row.attributes.get("archiver")
    return (task_id, archiver) if task_id and archiver else None


def enqueue(session: Session, messages: Iterable[Outgoing], now: datetime) -> list[OutboxRow]:
    """Add messages to the caller's transaction, in one INSERT; they are sent only if it commits."""
    # The trace they belong to travels with them, however late the relay publishes them.
    trace = message_context()
    rows = [(m.topic, m.data, {**m.attributes, **trace}) for m in messages]
    if not rows:
        return []
    ids = session.scalars(
        insert(OUTBOX).returning(OUTBOX.c.id, sort_by_parameter_order=True),
        [
            {"topic": topic, "data": data.decode(), "attributes": attributes, "created_at": now}
            for topic, data, attributes in rows
        ],
    )
    return [OutboxRow(i, *row) for i, row in zip(ids, rows, strict=True)]


def outbox_rows(messages: Iterable[OutboxMessage]) -> list[OutboxRow]:
    """The committed rows, detached from their session, ready to publish."""
    return [OutboxRow(m.id, m.topic, m.data.encode(), dict(m.attributes)) for m in messages]


class Outbox:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, message: Outgoing) -> list[OutboxRow]:
        """One message in a transaction of its own."""
        with new_session(self.engine) as s, s.begin():
            return enqueue(s, [message], utcnow())

    def unsent(self, limit: int = 100, min_age_s: float = 0.0, after_id: int = 0) -> list[OutboxRow]:
        """Messages still to publish, oldest first, from ``after_id`` on; ``min_age_s`` leaves
        fresh ones to their writer. Failed messages are never published."""
        cutoff = utcnow() - timedelta(seconds=min_age_s)
        with new_session(self.engine) as s:
            return outbox_rows(
                s.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.sent_at.is_(None),
                        OutboxMessage.failed_at.is_(None),
                        OutboxMessage.created_at <= cutoff,
                        OutboxMessage.id > after_id,
                    )
                    .order_by(OutboxMessage.id)
                    .limit(limit)
                )
            )

    def backlog(self) -> tuple[int, datetime | None]:
        """How many messages are still to publish, and when the oldest was written."""
        with new_session(self.engine) as s:
            count, oldest = s.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(
                    OutboxMessage.sent_at.is_(None), OutboxMessage.failed_at.is_(None)
                )
            ).one()
            return count, oldest

    def mark_sent(self, outbox_ids: Iterable[int]) -> None:
        with new_session(self.engine) as s, s.begin():
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(list(outbox_ids)))
                .values(sent_at=utcnow(), attempts=OutboxMessage.attempts + 1)
            )

    def record_failure(self, outbox_id: int, error: str, *, final: bool) -> None:
        """A publish failed. ``final``: the broker can never take the message, so it is never published again."""
        failed = {"failed_at": utcnow()} if final else {}
        with new_session(self.engine) as s, s.begin():
            s.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id)
                .values(attempts=OutboxMessage.attempts + 1, last_error=error[:2000], **failed)
            )
