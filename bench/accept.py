"""Accept benchmark: concurrent clients against the API, on the emulator stack or embedded.

On the stack (the default): starts the Pub/Sub, Firestore, GCS and Cloud Tasks
emulators, a throwaway Postgres, the API and the monolith service, then C
client processes each POST for D seconds. Prints accepted requests per second,
p50/p99 accept latency, the API's CPU per accept, and the median time from
accept to the first push reaching an archiver (the artifact's claim time minus
the task's creation time, read from the ledger). The load asks for the pdf
archiver, whose service is not started, so no capture competes for the two
cores; the latency probe afterwards asks an idle monolith service, one request
at a time.

``--embedded`` runs ``htbase serve`` as ``make run`` does (SQLite, local files,
the in-process dispatcher) with only the monolith archiver, and the load asks
for a page of the local test site that answers 404: each accept also costs
one cheap capture in the same process, as it does in that mode.

    .venv/bin/python bench/accept.py [--clients 8] [--seconds 10] [--embedded] [--tracing]

``--tracing`` records every span and exports traces and metrics over OTLP (to a sink that
discards them); without it no span is recorded. The difference is tracing's overhead.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sink import otlp_sink, telemetry_settings  # noqa: E402
from emulators import free_port  # noqa: E402
from emulators.process import ManagedProcess, family, http_answers  # noqa: E402
from emulators.stack import Stack  # noqa: E402
from tests.site.server import serve_test_site  # noqa: E402


def client(api: str, url: str, archiver: str, seconds: float, results) -> None:
    session = requests.Session()
    latencies, errors, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        began = time.perf_counter()
        response = session.post(f"{api}/api/v2/archive", json={"url": url, "archivers": [archiver]}, timeout=30)
        if response.status_code == 202:
            latencies.append(time.perf_counter() - began)
        else:
            errors += 1
    results.put((latencies, errors))


def cpu_seconds(pids: set[int]) -> float:
    """User and system CPU the processes have used: a cost that other load on the machine does not inflate."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def load(api: str, pids: set[int], url: str, archiver: str, clients: int, seconds: float) -> dict:
    """C clients POSTing for D seconds: the accepts' latencies, the errors, and the API's CPU meanwhile."""
    results: multiprocessing.Queue = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=client, args=(api, url, archiver, seconds, results)) for _ in range(clients)
    ]
    started, cpu = time.perf_counter(), cpu_seconds(pids)
    for worker in workers:
        worker.start()
    collected = [results.get() for _ in workers]
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pids) - cpu
    for worker in workers:
        worker.join()
    return {
        "latencies": [latency for batch, _ in collected for latency in batch],
        "errors": sum(e for _, e in collected),
        "elapsed": elapsed,
        "cpu": cpu,
    }


def first_push_waits(api: str, database_url: str, url: str) -> list[float]:
    """Seconds from accept to the first push reaching an idle monolith service, one request at a time."""
    probes = []
    for _ in range(20):
        answer = requests.post(f"{api}/api/v2/archive", json={"url": url, "archivers": ["monolith"]}, timeout=30)
        probes.append(answer.json()["task_id"])
        time.sleep(0.3)
    time.sleep(3)  # let the last pushes land
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT EXTRACT(EPOCH FROM a.started_at - t.created_at) FROM artifacts a "
                "JOIN tasks t USING (task_id) WHERE a.started_at IS NOT NULL AND t.task_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"ids": probes},
        )
        waits = [float(row[0]) for row in rows]
    engine.dispose()
    return waits


@contextmanager
def embedded(root: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """``htbase serve`` on the embedded defaults: its URL and its PID."""
    port = free_port()
    server = ManagedProcess(
        "htbase",
        [str(Path(sys.executable).parent / "htbase"), "serve"],
        port=port,
        env={
            **os.environ,
            "PORT": str(port),
            "DATABASE_URL": f"sqlite:///{root / 'htbase.db'}",
            "LOCAL_STORAGE_PATH": str(root / "files"),
            **env,
        },
        log_path=root / "htbase.log",
        probe=lambda: http_answers(f"http://127.0.0.1:{port}/healthz", lambda status: status == 200),
    )
    with server.start():
        assert server.pid is not None
        yield f"http://127.0.0.1:{port}", server.pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--embedded", action="store_true", help="`htbase serve` (make run) instead of the stack")
    parser.add_argument("--tracing", action="store_true", help="record and export every span (OTLP)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="htbase-accept-"))
    waits: list[float] = []
    with otlp_sink() as sink, serve_test_site() as site:
        settings = {"ALLOW_PRIVATE_URLS": "1", "LOG_LEVEL": "WARNING", **telemetry_settings(args.tracing, sink)}
        url = site.url("/missing")  # a cheap capture: one request, a permanent 404
        if args.embedded:
            where = "embedded (`htbase serve`, SQLite)"
            with embedded(root, {**settings, "ARCHIVERS": "monolith"}) as (api, pid):
                figures = load(api, family(pid), url, "monolith", args.clients, args.seconds)
        else:
            where = "the emulator stack"
            with Stack(root, services=("api", "archiver-monolith"), overrides=settings) as stack:
                api = stack.api_url
                pids = family(stack.pids()["api"])  # gunicorn and its workers
                figures = load(api, pids, url, "pdf", args.clients, args.seconds)
                waits = first_push_waits(api, stack.env["DATABASE_URL"], url)

    latencies, accepted = figures["latencies"], len(figures["latencies"])
    print(
        f"\n{args.clients} clients for {args.seconds:.0f}s against the API on {where}, "
        f"tracing {'on (OTLP)' if args.tracing else 'off'}"
    )
    print(f"accepted: {accepted} ({accepted / figures['elapsed']:.0f} requests/s), errors: {figures['errors']}")
    print(
        f"accept latency: p50 {1000 * statistics.median(latencies):.1f} ms, "
        f"p99 {1000 * percentile(latencies, 0.99):.1f} ms"
    )
    print(f"API CPU per accepted request: {1000 * figures['cpu'] / max(1, accepted):.2f} ms")
    if waits:
        print(
            f"accept to first push at the archiver: median {1000 * statistics.median(waits):.0f} ms "
            f"over {len(waits)} probes (p90 {1000 * percentile(waits, 0.9):.0f} ms)"
        )


if __name__ == "__main__":
    main()
