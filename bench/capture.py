"""Capture benchmark: N pages of the local test site, all five archivers (or ``--archivers``), through the API.

Prints per archiver and end to end the median and p95 wall time, pages per
minute and peak memory (this process and its children: Chromium, SingleFile),
then the same captures run bare — the archivers called directly on the same
warm browser, no API, ledger, dispatcher or storage — and the ratio between
the two, which is the pipeline's own overhead.

    .venv/bin/python bench/capture.py [--pages 10] [--path /article.html] [--archivers monolith] [--tracing]

``--tracing`` records every span and exports traces and metrics over OTLP (to a sink that
discards them); without it no span is recorded. The difference is tracing's overhead.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sink import otlp_sink, telemetry_settings  # noqa: E402
from htbase.config import Settings  # noqa: E402
from htbase.messages import ARCHIVERS  # noqa: E402
from service.embedded import EmbeddedService  # noqa: E402
from tests.site.server import serve_test_site  # noqa: E402


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for thread in os.listdir(f"/proc/{current}/task"):  # children of every thread, not just the main one
                with open(f"/proc/{current}/task/{thread}/children") as children:
                    stack.extend(int(c) for c in children.read().split())
        except OSError:
            continue
    return total / 2**20


class PeakMemory(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = 0.0, True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, tree_rss_mb(os.getpid()))
            time.sleep(0.05)


def quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def archive_through_api(base: str, url: str) -> tuple[float, dict]:
    """Submit and wait; the time is the server's, from accepting the task to its last artifact.

    Polling lightly keeps the client from competing with the captures for the two cores."""
    accepted = requests.post(f"{base}/api/v2/archive", json={"url": url}, timeout=30).json()
    while True:
        task = requests.get(base + accepted["status_url"], timeout=30).json()
        if task["status"] not in ("pending", "processing"):
            created, completed = (datetime.fromisoformat(task[k].rstrip("Z")) for k in ("created_at", "completed_at"))
            return (completed - created).total_seconds(), task
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--path", default="/article.html")
    parser.add_argument("--archivers", default=",".join(ARCHIVERS), help="comma-separated (default: all five)")
    parser.add_argument("--tracing", action="store_true", help="record and export every span (OTLP)")
    args = parser.parse_args()
    names = tuple(args.archivers.split(","))

    from werkzeug.serving import make_server

    root = Path(tempfile.mkdtemp(prefix="htbase-bench-"))
    sink = ExitStack()  # left open: the last export, at exit, goes to it too
    settings = Settings.from_env(
        {
            "DATABASE_URL": f"sqlite:///{root / 'htbase.db'}",
            "LOCAL_STORAGE_PATH": str(root / "files"),
            "ALLOW_PRIVATE_URLS": "1",
            "ARCHIVERS": args.archivers,
            "WORKER_CONCURRENCY": str(len(names)),
            "SWEEP_INTERVAL_SECONDS": "3600",
            "LOG_LEVEL": "WARNING",
            **telemetry_settings(args.tracing, sink.enter_context(otlp_sink())),
        }
    )
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    memory = PeakMemory()
    memory.start()
    with serve_test_site() as site, EmbeddedService(settings) as service:
        server = make_server("127.0.0.1", 0, service.api, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        pages = [site.url(f"{args.path}?page={n}") for n in range(args.pages)]

        archive_through_api(base, site.url(f"{args.path}?warmup"))  # starts Chromium, the proxy, the tools
        per_archiver: dict[str, list[float]] = {name: [] for name in names}
        end_to_end: list[float] = []
        started, own_cpu = time.perf_counter(), time.process_time()
        for url in pages:
            seconds, task = archive_through_api(base, url)
            if task["status"] != "success":
                raise SystemExit(f"capture failed: {task}")
            end_to_end.append(seconds)
            for name, sub in task["subtasks"].items():
                per_archiver[name].append(sub["artifact"]["duration_ms"] / 1000)
        pipeline_minutes = (time.perf_counter() - started) / 60
        # This process's CPU (API, dispatcher, ledger, storage, telemetry), not Chromium's or SingleFile's:
        # a cost that other load on the machine does not inflate.
        own_cpu_per_page = (time.process_time() - own_cpu) / len(pages)

        # Bare: the same five captures of each page, concurrently, straight into the archivers.
        archivers = {name: service.runtime.archiver(name) for name in names}
        bare_per_archiver: dict[str, list[float]] = {name: [] for name in names}
        bare_end_to_end: list[float] = []

        def bare_capture(name: str, url: str) -> None:
            began = time.perf_counter()
            archivers[name].capture(url, {})
            bare_per_archiver[name].append(time.perf_counter() - began)

        with ThreadPoolExecutor(len(names)) as pool:
            for url in pages:
                began = time.perf_counter()
                list(pool.map(bare_capture, names, [url] * len(names)))
                bare_end_to_end.append(time.perf_counter() - began)
        server.shutdown()
    memory.running = False

    print(
        f"\n{args.pages} pages of {args.path}, archivers {args.archivers}, {os.cpu_count()} cores, "
        f"tracing {'on (OTLP)' if args.tracing else 'off'}\n"
    )
    print(f"{'':14}{'pipeline median':>16}{'p95':>8}{'bare median':>13}{'p95':>8}{'ratio':>8}")
    for name in names:
        median, p95 = quantiles(per_archiver[name])
        bare_median, bare_p95 = quantiles(bare_per_archiver[name])
        print(f"{name:14}{median:15.2f}s{p95:7.2f}s{bare_median:12.2f}s{bare_p95:7.2f}s{median / bare_median:8.2f}")
    median, p95 = quantiles(end_to_end)
    bare_median, bare_p95 = quantiles(bare_end_to_end)
    print(f"{'end to end':14}{median:15.2f}s{p95:7.2f}s{bare_median:12.2f}s{bare_p95:7.2f}s{median / bare_median:8.2f}")
    print(
        f"\npages per minute: {args.pages / pipeline_minutes:.1f} through the API "
        f"(one page at a time, its captures in parallel)"
    )
    print(f"pipeline overhead: {100 * (median / bare_median - 1):+.1f}% of bare tool time (end-to-end medians)")
    print(
        f"htbase process CPU per page (API, dispatcher, ledger, storage, telemetry): {1000 * own_cpu_per_page:.0f} ms"
    )
    print(f"peak memory (process tree): {memory.peak:.0f} MiB")


if __name__ == "__main__":
    main()
