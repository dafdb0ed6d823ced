"""Housekeeping: the rounds that keep nothing waiting forever.

The sweeper revives or fails work whose lease expired, the relay publishes
whatever the outbox still holds, and the replica's queue is retried.
Long-running processes run a round on a timer; in the cloud, Cloud Scheduler
calls the ``housekeeping`` target instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from htbase.logs import log
from infra.ledger import Ledger
from infra.relay import Relay

logger = logging.getLogger("htbase.housekeeping")


def housekeep(ledger: Ledger, relay: Relay) -> dict[str, int]:
    """One round: revive or fail stale work, then publish everything unsent."""
    counts = ledger.sweep()
    counts["published"] = relay.flush(min_age_s=0 if counts["republished"] else 5.0)
    if any(counts.values()):
        log(logger, logging.INFO, "housekeeping", **counts)
    return counts


class Housekeeper:
    """Runs a housekeeping round every ``interval_s`` seconds on a daemon thread."""

    def __init__(self, round: Callable[[], object], interval_s: float) -> None:
        self.round, self.interval_s = round, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeper", daemon=True)

    def start(self) -> Housekeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.round()
            except Exception:  # the database may be briefly down; the next tick tries again
                logger.exception("housekeeping round failed")
