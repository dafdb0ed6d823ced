"""Chaos run: the emulator stack under faults while work flows, verified from the outside.

Starts the emulator stack (every service its own process, supervised as Cloud
Run supervises an instance) and submits URLs of the local test site, singly and
in batches, at a steady pace. Meanwhile, in turn, it SIGKILLs random archiver
services (the supervisor starts them again) and stops Pub/Sub, Postgres,
Firestore and GCS for a while each. Then it waits for the work to drain and
checks what the services left behind, from outside them (the API, the ledger's
tables, the bucket, the Firestore collection, the subscriptions, the logs):

- every task is terminal;
- every successful artifact is exactly one object in the bucket (two for
  readability: the article and its text) whose sha256 and size are the ledger's;
- a capture ran again only after the one before it failed or died with its
  process (a lease take-over), and none was stored twice;
- after housekeeping, each task's Firestore document is the one the ledger renders;
- the outbox and ``replica_pending`` are empty, and no subscription holds a message;

and prints a table of it.

    .venv/bin/python bench/chaos.py              # 1,000 URLs, every archiver, outages of 30-60 s
    .venv/bin/python bench/chaos.py --reduced    # 100 URLs, monolith and readability, one of each fault,
                                                 # 8-10 s outages: the form `make test` runs
    .venv/bin/python bench/chaos.py --archivers monolith   # the full faults, no browser
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulators.bootstrap import pubsub_clients  # noqa: E402
from emulators.stack import Stack  # noqa: E402
from htbase.messages import ARCHIVERS  # noqa: E402
from htbase.topology import ROUTES, archiver_service, topic_name  # noqa: E402
from infra.db import make_engine  # noqa: E402
from infra.ledger import Ledger  # noqa: E402
from infra.replica import firestore_client, task_documents  # noqa: E402
from infra.storage import gcs_client, make_file_store  # noqa: E402
from infra.summaries import Summaries  # noqa: E402

API = "/api/v2"
BATCH_SIZE = 10


@dataclass(frozen=True)
class Fault:
    """``kill`` a random archiver service (a crash), or ``stop`` a component for ``seconds`` (an outage)."""

    kind: str
    target: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"{self.target} down {self.seconds:.0f}s" if self.kind == "stop" else "SIGKILL an archiver"


@dataclass(frozen=True)
class Plan:
    urls: int
    archivers: tuple[str, ...]  # asked of every submission
    faults: tuple[Fault, ...]  # in turn, ``pause_s`` apart
    pause_s: float
    lease_s: float  # short, so that a capture killed midway is taken over soon
    drain_timeout_s: float
    also: tuple[str, ...] = ()  # asked of one submission in ``also_every`` besides
    also_every: int = 1

    def archivers_of(self, n: int) -> tuple[str, ...]:
        """What submission ``n`` asks for."""
        return self.archivers + (self.also if n % self.also_every == 0 else ())

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(archiver_service(name) for name in (*self.archivers, *self.also))


KILL = Fault("kill")
OUTAGES = (("pubsub", 30), ("postgres", 30), ("firestore", 60), ("gcs", 30))
FULL = Plan(
    1000,
    ARCHIVERS,
    (*(f for name, s in OUTAGES for f in (KILL, KILL, Fault("stop", name, s))), KILL, KILL),
    pause_s=15,
    lease_s=300,
    drain_timeout_s=3 * 3600,
)  # the production lease
# Monolith needs no browser; readability (Chromium) for one submission in five brings summaries in.
REDUCED = Plan(
    100,
    ("monolith",),
    (
        KILL,
        Fault("stop", "pubsub", 8),
        Fault("stop", "postgres", 8),
        Fault("stop", "firestore", 10),
        Fault("stop", "gcs", 8),
    ),
    pause_s=4,
    lease_s=30,
    drain_timeout_s=300,
    also=("readability",),
    also_every=5,
)


@dataclass
class Result:
    submitted_urls: int = 0
    accepted: list[str] = field(default_factory=list)  # task ids as the API answered them
    refused: Counter = field(default_factory=Counter)  # why a submission had to be sent again
    tasks: int = 0
    artifacts: Counter = field(default_factory=Counter)  # status -> count
    failed: Counter = field(default_factory=Counter)  # reason -> count
    lost: list[str] = field(default_factory=list)  # accepted tasks not terminal (or unknown) after the drain
    claims: int = 0
    started: int = 0
    retried_after_failure: int = 0
    taken_over: int = 0
    stored_twice: int = 0
    objects_checked: int = 0
    storage_mismatches: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    summaries: Counter = field(default_factory=Counter)  # success / failed / missing
    replica_mismatches: list[str] = field(default_factory=list)
    outbox_unsent: int = 0
    replica_pending: int = 0
    messages_left: int = 0
    drained_s: float | None = None  # after the last fault ended; None if it never did
    wall_s: float = 0.0

    @property
    def sound(self) -> bool:
        """Nothing lost, duplicated, corrupted or left behind."""
        return (
            not self.lost
            and not self.storage_mismatches
            and not self.replica_mismatches
            and self.stored_twice == 0
            and self.drained_s is not None
            and self.outbox_unsent == 0
            and self.replica_pending == 0
            and self.messages_left == 0
            and self.summaries["missing"] == 0
        )


# --- the load ---------------------------------------------------------------------------------


def units(plan: Plan, site_url) -> list[list[str]]:
    """The submissions: lists of URLs, singles and batches (a third of the URLs), shuffled. Most pages
    are the test article; one in twenty has no article, one in twenty is missing (HTTP 404)."""

    def url(n: int) -> str:
        page = "/missing" if n % 20 == 7 else "/no-article.html" if n % 20 == 13 else "/article.html"
        return site_url(f"{page}?chaos={n}")

    urls = [url(n) for n in range(plan.urls)]
    in_batches = (plan.urls // 3) // BATCH_SIZE * BATCH_SIZE
    batches = [urls[i : i + BATCH_SIZE] for i in range(0, in_batches, BATCH_SIZE)]
    submissions = batches + [[u] for u in urls[in_batches:]]
    random.Random(12).shuffle(submissions)
    return submissions


class Submitter(threading.Thread):
    """Submits every unit, evenly over ``duration_s``; what is refused (Postgres down: 503) is sent again."""

    def __init__(self, api: str, submissions: list[list[str]], plan: Plan, duration_s: float, result: Result) -> None:
        super().__init__(name="submitter", daemon=True)
        self.api, self.submissions, self.plan, self.duration_s = api, submissions, plan, duration_s
        self.result = result

    def run(self) -> None:
        session, began = requests.Session(), time.monotonic()
        for n, urls in enumerate(self.submissions):
            time.sleep(max(0.0, began + self.duration_s * n / len(self.submissions) - time.monotonic()))
            archivers = list(self.plan.archivers_of(n))
            if len(urls) == 1:
                path, body = "/archive", {"url": urls[0], "archivers": archivers}
            else:
                path, body = "/archive/batch", {"items": [{"url": u} for u in urls], "archivers": archivers}
            answer = self.submit(session, path, body)
            self.result.accepted += (
                [t["task_id"] for t in answer["tasks"]] if "tasks" in answer else [answer["task_id"]]
            )
            self.result.submitted_urls += len(urls)

    def submit(self, session: requests.Session, path: str, body: dict) -> dict:
        while True:
            try:
                response = session.post(f"{self.api}{API}{path}", json=body, timeout=30)
            except requests.RequestException as exc:
                self.result.refused[type(exc).__name__] += 1
            else:
                if response.status_code == 202:
                    return response.json()
                if response.status_code != 503:
                    raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
                self.result.refused["503 (nothing written)"] += 1
            time.sleep(0.5)


def inject(stack: Stack, plan: Plan, rng: random.Random) -> float:
    """Run the faults in turn; returns when the last one ended (time.monotonic())."""
    services = list(plan.services)
    ended = time.monotonic()
    for fault in plan.faults:
        time.sleep(plan.pause_s)
        if fault.kind == "kill":
            victim = rng.choice(services)
            stack.kill(victim)
            print(f"  {time.strftime('%H:%M:%S')} SIGKILL {victim}", flush=True)
        else:
            print(f"  {time.strftime('%H:%M:%S')} {fault.target} down for {fault.seconds:.0f}s", flush=True)
            stack.stop(fault.target)
            time.sleep(fault.seconds)
            stack.start(fault.target)
        ended = time.monotonic()
    return ended


# --- waiting and checking ---------------------------------------------------------------------


UNFINISHED = """
    SELECT (SELECT count(*) FROM artifacts WHERE status IN ('pending', 'processing'))
         + (SELECT count(*) FROM artifacts a JOIN tasks t ON t.task_id = a.task_id
              LEFT JOIN summaries s ON s.cache_key = t.summary_key
            WHERE a.archiver = 'readability' AND a.status = 'success' AND (s.id IS NULL OR s.status = 'pending'))
         + (SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL)
         + (SELECT count(*) FROM replica_pending)
"""


def drain(engine: sa.Engine, last_fault_ended: float, timeout_s: float) -> float | None:
    """Seconds from the end of the last fault until no work, summary, message or replica write is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            if connection.execute(sa.text(UNFINISHED)).scalar() == 0:
                return time.monotonic() - last_fault_ended
        time.sleep(1)
    return None


def reason(error: str | None) -> str:
    """An error without what varies from one task to the next (addresses, URLs, numbers)."""
    text = re.sub(r"https?://\S+", "URL", error or "?")
    return re.sub(r"\b\d+(\.\d+)?s\b", "Ns", text)[:90]


def check_tasks(api: str, engine: sa.Engine, result: Result) -> None:
    session = requests.Session()
    for task_id in result.accepted:
        response = session.get(f"{api}{API}/tasks/{task_id}", timeout=30)
        if response.status_code != 200 or response.json()["status"] not in ("success", "partial", "failed"):
            result.lost.append(task_id)
    with engine.connect() as connection:
        result.tasks = connection.execute(sa.text("SELECT count(*) FROM tasks WHERE kind = 'single'")).scalar()
        for status, count in connection.execute(sa.text("SELECT status, count(*) FROM artifacts GROUP BY status")):
            result.artifacts[status] = count
        for (error,) in connection.execute(sa.text("SELECT error FROM artifacts WHERE status = 'failed'")):
            result.failed[reason(error)] += 1
        result.claims = connection.execute(sa.text("SELECT coalesce(sum(attempts), 0) FROM artifacts")).scalar()
        summaries = connection.execute(
            sa.text("""
            SELECT coalesce(s.status, 'missing') FROM artifacts a JOIN tasks t ON t.task_id = a.task_id
            LEFT JOIN summaries s ON s.cache_key = t.summary_key
            WHERE a.archiver = 'readability' AND a.status = 'success'""")
        )
        result.summaries.update(status if status != "pending" else "missing" for (status,) in summaries)
        result.outbox_unsent = connection.execute(
            sa.text("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL")
        ).scalar()
        result.replica_pending = connection.execute(sa.text("SELECT count(*) FROM replica_pending")).scalar()


def check_storage(stack: Stack, engine: sa.Engine, result: Result) -> None:
    """Every successful artifact is its objects, whose bytes the ledger describes; nothing else is stored."""
    store = make_file_store(stack.settings)
    objects = {blob.name for blob in gcs_client(stack.settings).list_blobs(stack.settings.gcs_bucket)}
    expected: set[str] = set()
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT task_id, archiver, storage_key, sha256, size, meta FROM artifacts WHERE status = 'success'")
        )
        for task_id, archiver, key, sha256, size, meta in rows:
            meta = json.loads(meta) if isinstance(meta, str) else meta
            extras = set((meta or {}).get("extras", {}).values())
            expected |= {key, *extras}
            mine = {name for name in objects if name.startswith(f"{task_id}/{archiver}.")}
            data = store.get(key) if key in objects else b""
            result.objects_checked += 1
            if mine != {key, *extras} or hashlib.sha256(data).hexdigest() != sha256 or len(data) != size:
                result.storage_mismatches.append(f"{task_id}/{archiver}")
    result.orphan_objects = sorted(objects - expected)


def check_replica(stack: Stack, engine: sa.Engine, result: Result) -> None:
    """Each task's Firestore document is the one the ledger renders now."""
    render = task_documents(Ledger(engine), Summaries(engine))
    with engine.connect() as connection:
        task_ids = connection.execute(sa.text("SELECT task_id FROM tasks")).scalars().all()
    expected: dict[str, dict] = {}
    for task_id in task_ids:
        expected.update(render(task_id))
    collection = firestore_client(stack.settings).collection(stack.settings.firestore_collection)
    stored = {snapshot.id: snapshot.to_dict() for snapshot in collection.stream(timeout=60)}
    result.replica_mismatches = [
        f"{doc_id}: {difference(expected.get(doc_id), stored.get(doc_id))}"
        for doc_id in sorted(expected.keys() | stored.keys())
        if expected.get(doc_id) != stored.get(doc_id)
    ]


def difference(expected: Any, stored: Any, path: str = "") -> str:
    """Where a replica document differs from the ledger's: the first few fields, ledger -> replica."""
    if isinstance(expected, list) and isinstance(stored, list) and len(expected) == len(stored):
        pairs = enumerate(zip(expected, stored, strict=True))
        return "; ".join(difference(e, s, f"{path}[{n}]") for n, (e, s) in pairs if e != s)
    if not isinstance(expected, dict) or not isinstance(stored, dict):
        shown = (json.dumps(value, default=str)[:80] for value in (expected, stored))
        return f"{path or 'document'}: " + " -> ".join(shown)
    return "; ".join(
        difference(expected.get(key), stored.get(key), f"{path}.{key}".lstrip("."))
        for key in sorted(expected.keys() | stored.keys())
        if expected.get(key) != stored.get(key)
    )[:400]


def check_subscriptions(stack: Stack, result: Result) -> None:
    """Pull from every push subscription: a message still there was never acknowledged."""
    settings = stack.settings
    _, subscriber = pubsub_clients(settings.pubsub_emulator_host)
    for route in ROUTES:
        path = subscriber.subscription_path(
            settings.pubsub_project_id, f"{topic_name(settings.topic_prefix, route.topic)}-push"
        )
        response = subscriber.pull(subscription=path, max_messages=1000, return_immediately=True, timeout=30)
        if response.received_messages:  # hand them back
            subscriber.modify_ack_deadline(
                subscription=path, ack_deadline_seconds=0, ack_ids=[m.ack_id for m in response.received_messages]
            )
        result.messages_left += len(response.received_messages)


def check_captures(stack: Stack, result: Result) -> None:
    """From the services' logs: how often each artifact was captured, and why again."""
    events: dict[tuple[str, str], list[str]] = {}
    for log in stack.logs.glob("archiver-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if "archiver" in entry and "task_id" in entry:
                events.setdefault((entry["task_id"], entry["archiver"]), []).append(entry["message"])
    for messages in events.values():
        starts = messages.count("capture started")
        result.started += starts
        result.stored_twice += messages.count("capture stored") > 1
        result.retried_after_failure += messages.count("capture failed; will retry")
        ends = sum(
            m.startswith(("capture stored", "capture failed", "capture finished after losing")) for m in messages
        )
        result.taken_over += max(0, starts - ends)  # a capture that died with its process
        result.taken_over += messages.count("capture finished after losing its lease; discarded")


# --- the whole run ----------------------------------------------------------------------------


def run(plan: Plan, site, root: Path | None = None, seed: int = 7) -> Result:
    """The chaos run against a fresh stack in ``root``; ``site`` serves the pages (tests/site)."""
    root = root or Path(tempfile.mkdtemp(prefix="htbase-chaos-"))
    result, began = Result(), time.monotonic()
    services = ("api", *plan.services, "summarizer", "dead-letter")
    overrides = {
        "ALLOW_PRIVATE_URLS": "1",
        "LEASE_SECONDS": str(plan.lease_s),
        "SWEEP_INTERVAL_SECONDS": "2",
        "RETRY_BACKOFF_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    with Stack(root, overrides=overrides, services=services) as stack:
        print(
            f"stack up in {time.monotonic() - began:.0f}s ({root}); {plan.urls} URLs, faults: "
            + ", ".join(map(str, plan.faults)),
            flush=True,
        )
        schedule_s = sum(plan.pause_s + f.seconds for f in plan.faults)
        submitter = Submitter(stack.api_url, units(plan, site.url), plan, schedule_s, result)
        submitter.start()
        last_fault_ended = inject(stack, plan, random.Random(seed))
        submitter.join()
        engine = make_engine(stack.settings)
        try:
            result.drained_s = drain(engine, last_fault_ended, plan.drain_timeout_s)
            check_tasks(stack.api_url, engine, result)
            check_storage(stack, engine, result)
            check_replica(stack, engine, result)
            check_subscriptions(stack, result)
            check_captures(stack, result)
        finally:
            engine.dispose()
    result.wall_s = time.monotonic() - began
    return result


def table(plan: Plan, result: Result) -> str:
    rows = [
        (
            "submitted URLs",
            f"{result.submitted_urls} ({len(result.accepted)} tasks accepted, "
            f"{plan.urls // 3 // BATCH_SIZE} of them batches of {BATCH_SIZE})",
        ),
        ("sent again (refused while down)", ", ".join(f"{n} × {why}" for why, n in result.refused.items()) or "0"),
        ("artifacts", ", ".join(f"{n} {status}" for status, n in sorted(result.artifacts.items()))),
        *((f"  failed: {why}", str(n)) for why, n in result.failed.most_common()),
        ("lost (accepted, not terminal after the drain)", str(len(result.lost))),
        ("captures (ledger claims / started in logs)", f"{result.claims} / {result.started}"),
        ("  again after a transient failure", str(result.retried_after_failure)),
        ("  again after a lease take-over (killed)", str(result.taken_over)),
        ("  duplicates (stored twice)", str(result.stored_twice)),
        ("objects checked (sha256, size) / mismatches", f"{result.objects_checked} / {len(result.storage_mismatches)}"),
        ("objects without a successful artifact", str(len(result.orphan_objects))),
        ("summaries", ", ".join(f"{n} {status}" for status, n in sorted(result.summaries.items())) or "0"),
        ("replica mismatches (after housekeeping)", str(len(result.replica_mismatches))),
        ("outbox unsent / replica_pending", f"{result.outbox_unsent} / {result.replica_pending}"),
        ("messages left in subscriptions", str(result.messages_left)),
        ("time to drain after the last fault", "never" if result.drained_s is None else f"{result.drained_s:.0f} s"),
        ("wall time", f"{result.wall_s:.0f} s"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"| {name:<{width}} | {value} |" for name, value in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reduced", action="store_true", help="100 URLs, cheap archivers, one of each fault")
    parser.add_argument("--urls", type=int, help="how many URLs (default: the plan's)")
    parser.add_argument(
        "--archivers", help="which archivers every submission asks for (comma-separated; default: the plan's)"
    )
    args = parser.parse_args()
    plan = REDUCED if args.reduced else FULL
    if args.urls:
        plan = dataclasses.replace(plan, urls=args.urls)
    if args.archivers:
        plan = dataclasses.replace(plan, archivers=tuple(args.archivers.split(",")), also=())
    from tests.site.server import serve_test_site

    with serve_test_site() as site:
        result = run(plan, site)
    print(table(plan, result))
    for name in ("lost", "storage_mismatches", "replica_mismatches"):
        if getattr(result, name):
            print(f"{name}: {getattr(result, name)[:20]}")
    return 0 if result.sound else 1


if __name__ == "__main__":
    raise SystemExit(main())
