"""Readiness: whether this process can do its work now, part by part.

Liveness stays cheap (``/healthz``, ``/api/v2/health``: the process answers and the
ledger pings). Readiness asks every part a request needs: the ledger, the broker's
publish path, file storage, and what the runtime adds (``Runtime.readiness_checks``):
for a process that captures, the all-in-one one included, its browser. Each check runs at
once beside the others and has ``CHECK_TIMEOUT_S`` to answer; a part that fails
or does not answer in time is reported with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, TimeoutError

from infra.runtime import Runtime

CHECK_TIMEOUT_S = 5.0
# A key no artifact has ({task_id}/{archiver}.{ext}): looking it up proves storage answers and lets us read.
PROBE_KEY = "readiness/probe"
Check = Callable[[], object]  # raises when its part is not ready; what it returns is not looked at


def _broker(runtime: Runtime) -> None:
    if runtime.publisher is None:
        raise RuntimeError("no broker is configured")
    runtime.publisher.ready()


def readiness(runtime: Runtime) -> dict[str, str]:
    """Each part's state: "ok", or why it is not ready."""
    checks: dict[str, Check] = {
        "ledger": runtime.ledger.ping,
        "broker": lambda: _broker(runtime),
        "storage": lambda: runtime.store.exists(PROBE_KEY),
        **runtime.readiness_checks(),
    }
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readiness")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    states = {}
    for name, future in futures.items():
        try:
            future.result(timeout=CHECK_TIMEOUT_S)
            states[name] = "ok"
        except TimeoutError:
            states[name] = f"no answer within {CHECK_TIMEOUT_S:g}s"
        except Exception as exc:
            states[name] = f"{type(exc).__name__}: {exc}"[:300]
    pool.shutdown(wait=False)  # a hung check is left behind, not waited for
    return states
