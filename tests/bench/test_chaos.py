"""The reduced chaos run (``bench/chaos.py --reduced``) as part of ``make test``: 100 URLs through the
emulator stack while an archiver is killed and Pub/Sub, Postgres, Firestore and GCS each go down for
8-10 s; then nothing may be lost, duplicated, corrupted or left behind. About three minutes."""

from __future__ import annotations

import pytest

from bench.chaos import REDUCED, run, table

pytestmark = [pytest.mark.emulators, pytest.mark.postgres, pytest.mark.browser]


def test_the_reduced_chaos_run_loses_nothing(test_site, tmp_path):
    result = run(REDUCED, test_site, tmp_path / "stack")
    report = table(REDUCED, result)
    print(report)
    assert result.submitted_urls == REDUCED.urls, report
    assert not result.lost and result.drained_s is not None, report
    assert result.artifacts["success"] and set(result.artifacts) <= {"success", "failed"}, report
    assert set(result.failed) <= {"HTTP 404 Not Found for URL", "no readable article found"}, report
    assert result.stored_twice == 0 and not result.storage_mismatches and not result.orphan_objects, report
    assert result.summaries["success"] and not result.summaries["missing"], report
    assert not result.replica_mismatches, report
    assert (result.outbox_unsent, result.replica_pending, result.messages_left) == (0, 0, 0), report
    # The faults were real: clients met the Postgres outage, and the supervisor replaced the killed service.
    assert result.refused["503 (nothing written)"], report
    assert "exited; starting it again" in (tmp_path / "stack" / "logs" / "supervisor.log").read_text()
