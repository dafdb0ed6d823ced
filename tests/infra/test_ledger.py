"""The ledger on both engines: atomic acceptance, leases, retries, the sweeper."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from htbase.messages import ArchiveRequest, derive_task_status
from htbase.messages import ArtifactStatus as S
from htbase.messages import TaskStatus as T
from infra.documents import task_status
from infra.ledger import Claim, ClaimOutcome, ItemConflict, Ledger
from infra.models import Base, utcnow
from infra.outbox import Outbox
from tests.helpers import new_item, stored, time_passes, wait_for

URL = "https://example.org/a"


def lease_expiry(ledger: Ledger, task_id: str, archiver: str = "pdf"):
    return ledger.task(task_id).artifact(archiver).lease_expires_at


def test_migrations_match_the_models(engine):
    # Tables written through SQL of their own (search index, imports) are not ORM models: only the models compare.
    def modelled(obj, name, type_, reflected, compare_to):
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return table is None or table.name in Base.metadata.tables

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"include_object": modelled})
        diff = compare_metadata(context, Base.metadata)
    # (indexes PostgreSQL reflects on its own, e.g. GIN, skip include_object: filter them here too)
    diff = [d for d in diff if not (d[0].endswith("_index") and d[1].table.name not in Base.metadata.tables)]
    # PostgreSQL's search index keeps two columns of its own (the tsvector and its language), made by migration 0005
    postgres_only = {("search_documents", "config"), ("search_documents", "document")}
    diff = [
        d
        for d in diff
        if not (d[0] == "remove_column" and (d[2], d[3].name) in postgres_only)
        and not (d[0] == "remove_index" and (d[1].table.name, d[1].columns.keys()[0]) in postgres_only)
    ]
    assert diff == [], repr(diff)[:1500]


def test_create_task_writes_task_artifacts_and_outbox_together(ledger):
    created = ledger.create_task([new_item()], ["pdf", "screenshot"], options={"timeout": 5}, request_id="r1")
    task = ledger.task(created.task_id)
    assert [a.archiver for a in task.artifacts] == ["pdf", "screenshot"]
    assert {a.status for a in task.artifacts} == {"pending"}
    outbox = Outbox(ledger.engine).unsent()
    assert [row.topic for row in outbox] == ["archive-pdf", "archive-screenshot"]
    message = ArchiveRequest.from_json(outbox[0].data)
    assert (message.task_id, message.url, message.options, message.request_id) == (
        created.task_id,
        URL,
        {"timeout": 5},
        "r1",
    )
    assert [row.id for row in created.outbox] == [row.id for row in outbox]
    Outbox(ledger.engine).mark_sent([outbox[0].id])
    assert [row.id for row in Outbox(ledger.engine).unsent()] == [outbox[1].id]


def test_reused_item_id_for_another_url_is_refused_and_writes_nothing(ledger):
    ledger.create_task([new_item(item_id="mine")], ["pdf"])
    before = len(Outbox(ledger.engine).unsent())
    with pytest.raises(ItemConflict):
        ledger.create_task([new_item("https://example.org/other", item_id="mine")], ["pdf"])
    assert len(Outbox(ledger.engine).unsent()) == before
    assert ledger.list_tasks(limit=10, offset=0)[1] == 1


def test_batch_is_a_parent_with_one_child_task_per_url(ledger):
    created = ledger.create_task([new_item("https://e.org/1"), new_item("https://e.org/2")], ["pdf"], batch=True)
    assert created.kind == "batch" and len(created.children) == 2
    children = ledger.children(created.task_id)
    assert sorted(c.item.url for c in children) == ["https://e.org/1", "https://e.org/2"]
    tasks, total = ledger.list_tasks(limit=10, offset=0)
    assert total == 1 and tasks[0].task_id == created.task_id


def test_claim_is_exclusive_and_finished_work_is_done(ledger):
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    assert ledger.claim(task_id, "pdf", "w1") == Claim(ClaimOutcome.CLAIMED, 1)
    assert ledger.claim(task_id, "pdf", "w2").outcome is ClaimOutcome.BUSY
    assert ledger.complete(task_id, "pdf", "w1", stored(task_id), meta={"pages": 1}, duration_ms=5) == []
    assert ledger.claim(task_id, "pdf", "w3").outcome is ClaimOutcome.DONE
    assert ledger.claim(task_id, "monolith", "w3").outcome is ClaimOutcome.MISSING
    artifact = ledger.task(task_id).artifacts[0]
    assert (artifact.status, artifact.size, artifact.meta, artifact.attempts) == ("success", 10, {"pages": 1}, 1)


def test_concurrent_claims_have_exactly_one_winner(ledger):
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    outcomes, barrier = [], threading.Barrier(8)

    def claim(n):
        barrier.wait()
        outcomes.append(ledger.claim(task_id, "pdf", f"w{n}").outcome)

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count(ClaimOutcome.CLAIMED) == 1
    assert outcomes.count(ClaimOutcome.BUSY) == 7


def test_expired_lease_can_be_reclaimed_and_fences_out_the_old_holder(engine):
    ledger = Ledger(engine, lease_s=60, max_attempts=3)
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    ledger.claim(task_id, "pdf", "crashed")
    assert ledger.claim(task_id, "pdf", "fresh").outcome is ClaimOutcome.BUSY
    time_passes(ledger, task_id, 61)
    assert ledger.claim(task_id, "pdf", "fresh") == Claim(ClaimOutcome.CLAIMED, 2)
    assert ledger.complete(task_id, "pdf", "crashed", stored(task_id), meta={}, duration_ms=1) is None
    assert ledger.complete(task_id, "pdf", "fresh", stored(task_id), meta={}, duration_ms=1) == []


def test_transient_failures_retry_until_attempts_run_out(ledger):
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    for attempt in (1, 2):
        assert ledger.claim(task_id, "pdf", "w").attempts == attempt
        assert ledger.fail(task_id, "pdf", "w", "HTTP 503", permanent=False) is False
        assert ledger.task(task_id).artifacts[0].status == "pending"
    ledger.claim(task_id, "pdf", "w")
    assert ledger.fail(task_id, "pdf", "w", "HTTP 503 again", permanent=False) is True
    artifact = ledger.task(task_id).artifacts[0]
    assert (artifact.status, artifact.error, artifact.attempts) == ("failed", "HTTP 503 again", 3)


def test_permanent_failure_is_final_at_once(ledger):
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    ledger.claim(task_id, "pdf", "w")
    assert ledger.fail(task_id, "pdf", "w", "HTTP 404", permanent=True)
    assert ledger.claim(task_id, "pdf", "w").outcome is ClaimOutcome.DONE


def test_sweeper_republishes_expired_work_and_fails_exhausted_work(engine):
    ledger = Ledger(engine, lease_s=60, max_attempts=2)
    task_id = ledger.create_task([new_item()], ["pdf", "screenshot"]).task_id
    Outbox(ledger.engine).mark_sent(row.id for row in Outbox(ledger.engine).unsent())
    ledger.claim(task_id, "pdf", "crashed")  # attempt 1 of 2: will be republished
    for owner in ("a", "b"):  # attempts exhausted: will be failed
        ledger.claim(task_id, "screenshot", owner)
        time_passes(ledger, task_id, 61)
    assert ledger.sweep() == {"republished": 1, "failed": 1}
    [republished] = Outbox(ledger.engine).unsent()
    assert ArchiveRequest.from_json(republished.data).archiver == "pdf"
    by_name = {a.archiver: a for a in ledger.task(task_id).artifacts}
    assert by_name["pdf"].status == "pending"
    assert by_name["screenshot"].status == "failed" and "gave up after 2 attempts" in by_name["screenshot"].error
    # Once failed, work stays failed.
    assert ledger.sweep() == {"republished": 0, "failed": 0}
    assert {a.archiver: a.status for a in ledger.task(task_id).artifacts}["screenshot"] == "failed"


def test_dead_letter_fails_unfinished_work_only(ledger):
    task_id = ledger.create_task([new_item()], ["pdf", "screenshot"]).task_id
    ledger.claim(task_id, "pdf", "w")
    ledger.complete(task_id, "pdf", "w", stored(task_id), meta={}, duration_ms=1)
    assert not ledger.fail_undelivered(task_id, "pdf", "poison")
    assert ledger.fail_undelivered(task_id, "screenshot", "poison")
    status, progress, completed_at = task_status([ledger.task(task_id)])
    assert (status, progress) == ("partial", 1.0) and completed_at is not None


def test_tasks_list_newest_first_with_pagination(ledger):
    ids = [ledger.create_task([new_item(f"https://e.org/{n}")], ["pdf"]).task_id for n in range(5)]
    page, total = ledger.list_tasks(limit=2, offset=0)
    assert total == 5 and [t.task_id for t in page] == ids[::-1][:2]
    page, _ = ledger.list_tasks(limit=2, offset=4)
    assert [t.task_id for t in page] == [ids[0]]


@pytest.mark.parametrize(
    "statuses, expected",
    [
        ([], (T.PENDING, 0.0)),
        ([S.PENDING, S.PENDING], (T.PENDING, 0.0)),
        ([S.PROCESSING, S.PENDING], (T.PROCESSING, 0.0)),
        ([S.SUCCESS, S.PENDING], (T.PROCESSING, 0.5)),
        ([S.SUCCESS, S.SUCCESS], (T.SUCCESS, 1.0)),
        ([S.SUCCESS, S.FAILED], (T.PARTIAL, 1.0)),
        ([S.FAILED, S.FAILED], (T.FAILED, 1.0)),
        ([S.CANCELLED, S.CANCELLED], (T.CANCELLED, 1.0)),
        ([S.FAILED, S.CANCELLED], (T.CANCELLED, 1.0)),
    ],
)
def test_task_status_is_derived_from_artifacts(statuses, expected):
    assert derive_task_status(statuses) == expected


def test_a_held_lease_outlives_its_length_and_a_crash_lets_it_expire(engine):
    ledger = Ledger(engine, lease_s=3, max_attempts=3)  # renewed every second while held
    task_id = ledger.create_task([new_item()], ["pdf"]).task_id
    ledger.claim(task_id, "pdf", "busy-worker")
    first = lease_expiry(ledger, task_id)
    with ledger.holding(task_id, "pdf", "busy-worker"):
        # The heartbeat has renewed it to end a whole lease after the first one would have.
        wait_for(lambda: lease_expiry(ledger, task_id) > first + timedelta(seconds=3), 60, "the heartbeats")
        assert utcnow() > first  # the first lease is over...
        assert ledger.claim(task_id, "pdf", "other").outcome is ClaimOutcome.BUSY  # ...and it is still held
    held_until = lease_expiry(ledger, task_id)
    # No more heartbeats, as after a crash: the lease ends when it was last renewed to.
    assert wait_for(
        lambda: ledger.claim(task_id, "pdf", "other").outcome is ClaimOutcome.CLAIMED, 60, "the lease to expire"
    )
    assert utcnow() > held_until


def test_a_batch_lists_its_children_in_one_defined_order(ledger):
    """Its children share their creation time, and a row that changes may move (in Postgres): the
    order is the id's, not whatever the database returns that time (a replica document once differed
    from the ledger's by the order of its items)."""
    created = ledger.create_task([new_item(f"https://e.org/{n}") for n in range(8)], ["pdf"], batch=True)
    listed = [task.task_id for task in ledger.children(created.task_id)]
    assert listed == sorted(child["task_id"] for child in created.children)
