"""Capture benchmark: N pages of the local test site, all five archivers (or ``--archivers``), through the API.

Prints per archiver and end to end the median and p95 wall time, pages per
minute and peak memory (this process and its children: Chromium, SingleFile),
then the same captures run bare — the archivers called directly on the same
warm browser, no API, ledger, dispatcher or storage — and the ratio between
the two, which is the pipeline's own overhead.

Beside wall time it prints the CPU-seconds each archive (one page, all its
captures) costs, counted over every process that works on it — this one (API,
dispatcher, storage, the test site it serves from, the polling client), Chromium
and its renderers, the SingleFile runs — and turns them into a cost per 1,000
archives at Cloud Run's list prices (``CLOUD_RUN`` below).

    .venv/bin/python bench/capture.py [--pages 10] [--path /article.html] [--archivers monolith] [--tracing]

``--tracing`` records every span and exports traces and metrics over OTLP (to a sink that
discards them); without it no span is recorded. The difference is tracing's overhead.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
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


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (children, grandchildren, ...), parents before their children."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        try:
            threads = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue  # exited meanwhile
        for thread in threads:  # children of every thread, not just the main one
            try:
                with open(f"/proc/{current}/task/{thread}/children") as children:
                    kids = [int(c) for c in children.read().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total = 0
    for current in (pid, *descendants(pid)):
        try:
            with open(f"/proc/{current}/statm") as statm:
                total += int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
    return total / 2**20


def tree_cpu_s() -> float:
    """CPU-seconds (user + system) spent so far by this process, all its threads,
    every descendant still alive and every descendant that has exited.

    The delta between two readings is the work done in between, all processes
    counted once: a process's time moves, when it exits, from its own counters
    into its parent's ``cutime``/``cstime`` (the time of the children it reaped,
    theirs included), so each live descendant counts its own time plus its
    reaped children's, and this process's reaped children (SingleFile runs) are
    ``RUSAGE_CHILDREN``. Lost: a process whose parent exits before reaping it
    (orphans go to init), and one that exits in the instant between reading its
    parent and reading it; neither happens between pages, when this is read."""
    own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    ticks = 0
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                # After "(comm)": state is field 3; utime, stime, cutime, cstime are fields 14-17.
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its parent's reaped-children time has it
        ticks += sum(int(value) for value in fields[11:15])
    return total + ticks / os.sysconf("SC_CLK_TCK")


# Cloud Run list prices, tier 1 regions, request-based billing ("CPU only
# allocated during request processing"), as published in 2025: per vCPU-second
# and per GiB-second of the instance's allocation, and per request. The
# instance is the archiver service's default size (terraform: archiver_service).
CLOUD_RUN = {"vcpu_s": 0.000024, "gib_s": 0.0000025, "request": 0.40e-6}
INSTANCE_VCPUS, INSTANCE_GIB = 2, 4


def cost_per_1000(cpu_s: float, wall_s: float, requests: int) -> tuple[float, float]:
    """Dollars per 1,000 archives on an INSTANCE_VCPUS/INSTANCE_GIB instance:
    kept busy (it bills ``cpu_s`` of its vCPUs' time, memory for the same share
    of its time), and archiving one page at a time (it bills ``wall_s`` of the
    whole instance). ``requests``: the push requests an archive makes."""
    instance_second = INSTANCE_VCPUS * CLOUD_RUN["vcpu_s"] + INSTANCE_GIB * CLOUD_RUN["gib_s"]
    per_request = requests * CLOUD_RUN["request"]
    busy = cpu_s / INSTANCE_VCPUS * instance_second + per_request
    one_at_a_time = wall_s * instance_second + per_request
    return 1000 * busy, 1000 * one_at_a_time


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
        cpu_per_page: list[float] = []  # every process's CPU-seconds, per page
        started, own_cpu = time.perf_counter(), time.process_time()
        for url in pages:
            cpu_before = tree_cpu_s()
            seconds, task = archive_through_api(base, url)
            cpu_per_page.append(tree_cpu_s() - cpu_before)
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
        bare_cpu_per_page: list[float] = []

        def bare_capture(name: str, url: str) -> None:
            began = time.perf_counter()
            archivers[name].capture(url, {})
            bare_per_archiver[name].append(time.perf_counter() - began)

        with ThreadPoolExecutor(len(names)) as pool:
            for url in pages:
                began, cpu_before = time.perf_counter(), tree_cpu_s()
                list(pool.map(bare_capture, names, [url] * len(names)))
                bare_end_to_end.append(time.perf_counter() - began)
                bare_cpu_per_page.append(tree_cpu_s() - cpu_before)
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

    cpu, cpu_p95 = quantiles(cpu_per_page)
    bare_cpu, bare_cpu_p95 = quantiles(bare_cpu_per_page)
    print(
        f"\nCPU-seconds per archive (all processes: htbase, Chromium, SingleFile; one page, {len(names)} captures):"
        f"\n{'':14}{'pipeline median':>16}{'p95':>8}{'bare median':>13}{'p95':>8}"
        f"\n{'CPU':14}{cpu:15.2f}s{cpu_p95:7.2f}s{bare_cpu:12.2f}s{bare_cpu_p95:7.2f}s"
        f"\n{'wall':14}{median:15.2f}s{p95:7.2f}s{bare_median:12.2f}s{bare_p95:7.2f}s"
    )
    print(
        "per page (pipeline), wall / CPU: "
        + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in zip(end_to_end, cpu_per_page, strict=True))
    )
    busy, one_at_a_time = cost_per_1000(cpu, median, len(names))
    print(
        f"\nCloud Run cost per 1,000 archives (tier 1, request-based: ${CLOUD_RUN['vcpu_s']:.6f}/vCPU-s, "
        f"${CLOUD_RUN['gib_s']:.7f}/GiB-s, ${CLOUD_RUN['request'] * 1e6:.2f}/million requests; "
        f"{INSTANCE_VCPUS} vCPU, {INSTANCE_GIB} GiB instances):\n"
        f"  ${busy:.3f} with the instance kept busy (billed for the CPU-seconds), "
        f"${one_at_a_time:.3f} archiving one page at a time (billed for the wall time)"
    )


if __name__ == "__main__":
    main()
