"""Tracing's overhead, measured interleaved: two ``htbase serve`` processes on the embedded defaults,
one recording no span (``TRACE_SAMPLE_RATIO=0``, no exporter) and one recording every span and
exporting traces and metrics over OTLP to a sink that discards them, loaded in alternating rounds
(off-on, on-off, ...) so that whatever else the machine does weighs on both alike.

Each round measures a server's CPU (its whole process tree: Chromium and the tools too, the
children it reaped included) per unit of work, and the wall time; the on/off ratio is taken per
pair of rounds, whose spread shows how far a single comparison can be trusted.

``accept``: C clients POST for D seconds (as ``bench/accept.py --embedded``: each accept also costs
one cheap capture, a 404). ``capture``: N pages of the local test site, one at a time, through the
API (as ``bench/capture.py``).

    .venv/bin/python bench/overhead.py accept [--rounds 6] [--seconds 5] [--clients 4]
    .venv/bin/python bench/overhead.py capture [--rounds 6] [--pages 3] [--archivers monolith]

``--ratio 0.1`` has the server tracing on sample a tenth of the submissions (``TRACE_SAMPLE_RATIO``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.accept import embedded, load  # noqa: E402
from bench.capture import archive_through_api  # noqa: E402
from bench.sink import otlp_sink, telemetry_settings  # noqa: E402
from emulators.process import family  # noqa: E402
from tests.site.server import serve_test_site  # noqa: E402

MODES = ("off", "on")


def tree_cpu_s(pid: int) -> float:
    """CPU-seconds of a process and its descendants, with the children each has reaped."""
    ticks = 0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its parent's reaped-children time has it
        ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def settled_cpu_s(pid: int, idle_s: float = 0.05) -> float:
    """The tree's CPU-seconds once it has gone quiet (under ``idle_s`` in half a second): the work a
    round left queued (an accept's capture) is counted in that round, not run during the next."""
    last = tree_cpu_s(pid)
    while True:
        time.sleep(0.5)
        now = tree_cpu_s(pid)
        if now - last < idle_s:
            return now
        last = now


def accept_round(args: argparse.Namespace, url: str) -> Callable[[str], tuple[int, float]]:
    def run(api: str) -> tuple[int, float]:
        figures = load(api, set(), url, "monolith", args.clients, args.seconds)
        return len(figures["latencies"]), statistics.median(figures["latencies"])

    return run


def capture_round(args: argparse.Namespace, url: str) -> Callable[[str], tuple[int, float]]:
    def run(api: str) -> tuple[int, float]:
        seconds = []
        for page in range(args.pages):
            took, task = archive_through_api(api, f"{url}?page={time.monotonic_ns()}-{page}")
            if task["status"] != "success":
                raise SystemExit(f"capture failed: {task}")
            seconds.append(took)
        return args.pages, statistics.median(seconds)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=("accept", "capture"))
    parser.add_argument("--rounds", type=int, default=6, help="rounds per mode, alternated")
    parser.add_argument("--seconds", type=float, default=5, help="accept: each round's length")
    parser.add_argument("--clients", type=int, default=4, help="accept: concurrent clients")
    parser.add_argument("--pages", type=int, default=3, help="capture: pages per round")
    parser.add_argument("--path", default="/article.html", help="capture: the test site's page")
    parser.add_argument("--archivers", default="monolith", help="capture: comma-separated")
    parser.add_argument("--ratio", default="1", help="TRACE_SAMPLE_RATIO of the server tracing on")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="htbase-overhead-"))
    with ExitStack() as stack:
        site = stack.enter_context(serve_test_site())
        sink = stack.enter_context(otlp_sink())
        if args.workload == "accept":
            archivers, unit = "monolith", "accepted request"
            run = accept_round(args, site.url("/missing"))  # a cheap capture: one request, a permanent 404
        else:
            archivers, unit = args.archivers, "page"
            run = capture_round(args, site.url(args.path))
        servers = {}
        for mode in MODES:
            env = {
                "ALLOW_PRIVATE_URLS": "1",
                "LOG_LEVEL": "WARNING",
                "ARCHIVERS": archivers,
                "WORKER_CONCURRENCY": str(len(archivers.split(","))),
                "SWEEP_INTERVAL_SECONDS": "3600",
                **telemetry_settings(mode == "on", sink),
            }
            if mode == "on":
                env["TRACE_SAMPLE_RATIO"] = args.ratio
            (root / mode).mkdir()
            servers[mode] = stack.enter_context(embedded(root / mode, env))
        for api, _ in servers.values():
            run(api)  # warm-up, not counted: Chromium's start, the first requests

        cpu: dict[str, list[float]] = {mode: [] for mode in MODES}  # CPU-seconds per unit, per round
        wall: dict[str, list[float]] = {mode: [] for mode in MODES}  # median seconds per unit, per round
        for number in range(args.rounds):
            for mode in MODES if number % 2 == 0 else MODES[::-1]:
                api, pid = servers[mode]
                before = settled_cpu_s(pid)
                units, median = run(api)
                cpu[mode].append((settled_cpu_s(pid) - before) / max(1, units))
                wall[mode].append(median)
                print(f"round {number + 1} tracing {mode:3}: {units:5} units, {1000 * cpu[mode][-1]:8.2f} ms CPU each")

    ratios = [on / off for off, on in zip(cpu["off"], cpu["on"], strict=True)]
    print(
        f"\n{args.workload}: {args.rounds} alternated rounds per mode, tracing on samples {args.ratio}, "
        f"{os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end"
    )
    for mode in MODES:
        print(
            f"tracing {mode:3}: CPU per {unit} mean {1000 * statistics.mean(cpu[mode]):.2f} ms "
            f"(rounds {1000 * min(cpu[mode]):.2f}-{1000 * max(cpu[mode]):.2f}), "
            f"wall median {1000 * statistics.median(wall[mode]):.1f} ms"
        )
    print(
        f"on/off CPU: {statistics.mean(cpu['on']) / statistics.mean(cpu['off']):.3f} on the means; "
        f"per round pair median {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})"
    )
    print(f"on/off wall: {statistics.median(wall['on']) / statistics.median(wall['off']):.3f} on the medians")


if __name__ == "__main__":
    main()
