"""Search benchmark: N synthetic articles in each engine, the indexing rate and query latency.

Each article is about ``--words`` words drawn from a made-up vocabulary of
20,000 words with Zipf-like frequencies (as in real text a few words are
everywhere and most are rare), with a title and a summary. Both engines get
the same articles: SQLite (FTS5) in a temp file, PostgreSQL (tsvector + GIN)
in a throwaway cluster. Queries are two words of the vocabulary's ranks
50..5,000 (the words people search for: not the commonest, not the rarest),
each answered as the API answers it: the first page of 20 ranked hits with
snippets, and the total.

Latency is reported twice: wall-clock, and CPU time (this process's thread
plus, for PostgreSQL, every server process, read from /proc/PID/schedstat).
On a machine shared with other work the wall clock measures the queue for a
core as much as the query; the CPU time is what a query costs on an idle one.
The load average is printed beside them.

    .venv/bin/python bench/search.py [--articles 100000] [--words 300] [--queries 200]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulators.postgres import ThrowawayPostgres  # noqa: E402
from htbase.config import Settings  # noqa: E402
from infra.db import make_engine, migrate  # noqa: E402
from infra.search import Document, Search  # noqa: E402
from infra.storage import LocalFileStore  # noqa: E402

VOCABULARY = 20_000
BATCH = 1_000
SYLLABLES = [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def vocabulary(rng: random.Random) -> list[str]:
    words: set[str] = set()
    while len(words) < VOCABULARY:
        words.add("".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))))
    return sorted(words, key=lambda _: rng.random())


def articles(count: int, length: int, seed: int = 7):
    rng = random.Random(seed)
    words = vocabulary(rng)
    weights = list(itertools.accumulate(1 / rank**1.07 for rank in range(1, VOCABULARY + 1)))
    start = datetime(2025, 1, 1)

    def some(k: int) -> str:
        return " ".join(rng.choices(words, cum_weights=weights, k=k))

    for n in range(count):
        yield Document(
            item_id=f"item-{n}",
            task_id=f"task-{n:030d}",
            captured_at=start + timedelta(minutes=n),
            url=f"https://site{n % 500}.example/{n}",
            title=some(6),
            site=f"site{n % 500}.example",
            body=some(length),
            summary=some(40),
            key_points=(some(8), some(8), some(8)),
            tags=tuple(rng.sample(words[:300], 2)),
            language="en",
        )


def load(engine, search: Search, count: int, length: int) -> float:
    """Index ``count`` articles in batches; returns articles per second."""
    began = time.perf_counter()
    batch: list[Document] = []
    for document in articles(count, length):
        batch.append(document)
        if len(batch) == BATCH:
            write(engine, search, batch)
            batch = []
    write(engine, search, batch)
    return count / (time.perf_counter() - began)


def write(engine, search: Search, documents: list[Document]) -> None:
    if not documents:
        return
    with engine.begin() as connection:  # the rows a search document points at
        connection.execute(
            text("INSERT INTO items (item_id, url, url_hash, created_at) VALUES (:item_id, :url, 'x', :captured_at)"),
            [{"item_id": d.item_id, "url": d.url, "captured_at": d.captured_at} for d in documents],
        )
        connection.execute(
            text(
                "INSERT INTO tasks (task_id, kind, item_id, request_id, options, created_at) "
                "VALUES (:task_id, 'single', :item_id, '', '{}', :captured_at)"
            ),
            [{"task_id": d.task_id, "item_id": d.item_id, "captured_at": d.captured_at} for d in documents],
        )
    search.put(documents)


def queries(count: int) -> list[str]:
    rng = random.Random(11)
    words = vocabulary(random.Random(7))
    return [f"{rng.choice(words[50:5000])} {rng.choice(words[50:5000])}" for _ in range(count)]


def cpu_ns(server_pid: int | None) -> int:
    """CPU time so far of this thread and of the database server's processes (the postmaster's children)."""
    used = time.thread_time_ns()
    if server_pid:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
        for pid in [str(server_pid), *children]:
            try:
                used += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
            except (OSError, ValueError):
                continue  # gone meanwhile
    return used


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[int(len(ordered) * 0.95)]


def measure(search: Search, count: int, server_pid: int | None) -> tuple[list[float], list[float], float]:
    for query in queries(10):  # warm the caches, as a running service has them
        search.search(query)
    walls, cpus, totals = [], [], []
    for query in queries(count):
        began, began_cpu = time.perf_counter(), cpu_ns(server_pid)
        totals.append(search.search(query, limit=20).total)
        cpus.append((cpu_ns(server_pid) - began_cpu) / 1e6)
        walls.append((time.perf_counter() - began) * 1000)
    return walls, cpus, statistics.mean(totals)


def run(name: str, url: str, args, root: Path, server_pid: int | None = None) -> None:
    engine = make_engine(Settings(database_url=url, local_storage_path=root / "files"))
    migrate(engine)
    search = Search(engine, LocalFileStore(root / "files"))
    rate = load(engine, search, args.articles, args.words)
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("ANALYZE search_documents"))
    walls, cpus, hits = measure(search, args.queries, server_pid)
    (wall50, wall95), (cpu50, cpu95) = percentiles(walls), percentiles(cpus)
    print(
        f"{name:<10} {args.articles:>8,} articles  indexed {rate:>7,.0f}/s  two-word query: wall p50 "
        f"{wall50:6.1f} ms p95 {wall95:6.1f} ms, CPU p50 {cpu50:6.1f} ms p95 {cpu95:6.1f} ms  "
        f"(mean {hits:,.0f} matches; load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--words", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "sqlite" in args.engines:
            run("sqlite", f"sqlite:///{root / 'bench.db'}", args, root)
        if "postgres" in args.engines:
            with ThrowawayPostgres() as server:
                run("postgres", server.url, args, root, server.pid)


if __name__ == "__main__":
    main()
