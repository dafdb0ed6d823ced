"""Items over time: an item is one URL (or a client's item_id), each capture of it a snapshot (a task).

Here: the newest successful capture of a format at a time, and re-capture schedules (a page of
items and an item's snapshots are ``infra.catalog``'s). Every ``every`` seconds housekeeping adds a
snapshot to a scheduled item (Cloud Scheduler's tick in the cloud, the housekeeper's timer in one
process), in the transaction that moves the schedule on: one snapshot per period, however many
housekeepers run.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import select

from infra.ledger import SUCCESS, Ledger, NewSnapshots
from infra.models import Artifact, Item, Schedule, Task, utcnow
from infra.outbox import OutboxRow

UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
EVERY = re.compile(r"([1-9][0-9]{0,4})([mhdw])")
MIN_EVERY_S, MAX_EVERY_S = 3600, 365 * 86400


def parse_every(text: str) -> int:
    """``"1d"``, ``"12h"``, ``"2w"``, ``"90m"`` in seconds: at least an hour, at most a year."""
    match = EVERY.fullmatch(text)
    if not match:
        raise ValueError("'every' must be a number and a unit: m, h, d or w (e.g. \"1d\")")
    seconds = int(match[1]) * UNITS[match[2]]
    if not MIN_EVERY_S <= seconds <= MAX_EVERY_S:
        raise ValueError("'every' must be at least 1h and at most 365d")
    return seconds


class Items:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def newest_success(self, item_id: str, archiver: str, at: datetime | None = None) -> tuple[Task, Artifact] | None:
        """The newest snapshot of the item that holds ``archiver``'s capture, taken at or before ``at``
        (to the millisecond, as documents show times: a snapshot's own time picks it)."""
        query = (
            select(Task, Artifact)
            .join(Artifact, Artifact.task_id == Task.task_id)
            .where(Task.item_id == item_id, Artifact.archiver == archiver, Artifact.status == SUCCESS)
        )
        if at is not None:
            end_of_millisecond = at.replace(microsecond=at.microsecond // 1000 * 1000) + timedelta(milliseconds=1)
            query = query.where(Task.created_at < end_of_millisecond)
        with self.ledger.session() as session:
            found = session.execute(query.order_by(Task.created_at.desc(), Task.task_id).limit(1)).first()
        return (found[0], found[1]) if found else None

    # --- re-capture schedules ------------------------------------------------

    def schedule(self, item_id: str) -> Schedule | None:
        with self.ledger.session() as session:
            return session.get(Schedule, item_id)

    def set_schedule(self, item_id: str, every_s: int, archivers: list[str]) -> Schedule | None:
        """Capture the item again every ``every_s`` seconds, the first time one period from now; None
        if there is no such item."""
        now = utcnow()
        with self.ledger.session() as session, session.begin():
            if session.get(Item, item_id) is None:
                return None
            schedule = session.get(Schedule, item_id) or Schedule(item_id=item_id, created_at=now)
            schedule.every_s, schedule.archivers = every_s, list(archivers)
            schedule.next_run_at = now + timedelta(seconds=every_s)
            session.add(schedule)
        return schedule

    def unschedule(self, item_id: str) -> bool:
        with self.ledger.session() as session, session.begin():
            schedule = session.get(Schedule, item_id)
            if schedule is not None:
                session.delete(schedule)
            return schedule is not None

    def run_schedules(self, now: datetime | None = None, limit: int = 100) -> list[OutboxRow]:
        """Add a snapshot to every item whose re-capture is due, and move its schedule on by whole
        periods (after an outage: one snapshot, not one per missed period); the messages to publish."""
        now = now or utcnow()
        snapshots = NewSnapshots(now)
        with self.ledger.session() as session, session.begin():
            due = session.scalars(
                select(Schedule)
                .where(Schedule.next_run_at <= now)
                .order_by(Schedule.next_run_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for schedule in due:
                item = session.get_one(Item, schedule.item_id)  # a schedule goes with its item
                snapshots.add(item.item_id, item.url, schedule.archivers, {})
                missed = int((now - schedule.next_run_at).total_seconds() // schedule.every_s) + 1
                schedule.next_run_at += timedelta(seconds=missed * schedule.every_s)
            return snapshots.write(session)
