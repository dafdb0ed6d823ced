"""The topology as Terraform reads it: ``terraform/topology.auto.tfvars.json``.

The second renderer of ``htbase/topology.py`` (the first, ``emulators/bootstrap.py``,
lays it on the emulators). Terraform iterates over the variable it writes, so a
route added to the registry becomes a topic, a push subscription and a Cloud Run
service on the next apply. Names stay logical here; Terraform adds the
deployment's prefix exactly as ``topic_name`` does.

    python -m emulators.terraform_topology           # `make terraform-topology`: rewrite the file
    python -m emulators.terraform_topology --check   # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from htbase.topology import (
    ACK_DEADLINE_S,
    DEAD_LETTER,
    HOUSEKEEPING,
    MAX_BACKOFF_S,
    QUEUES,
    ROUTES,
    SUMMARIZE,
    Route,
)

TFVARS = Path(__file__).resolve().parent.parent / "terraform" / "topology.auto.tfvars.json"


def _service(route: Route) -> dict:
    return {
        "service": route.service,
        "target": route.target,
        "path": route.path,
        "archiver": route.archiver,
        "role": route.role,
        "env": route.service_env,
    }


def render() -> dict:
    """The ``topology`` variable of the Terraform root module."""
    return {
        "topology": {
            "ack_deadline_seconds": ACK_DEADLINE_S,
            "max_backoff_seconds": MAX_BACKOFF_S,
            "summarize_topic": SUMMARIZE,
            "dead_letter_topic": DEAD_LETTER,
            "routes": {route.topic: {**_service(route), "dead_lettered": route.dead_lettered} for route in ROUTES},
            "housekeeping": _service(HOUSEKEEPING),
            "queues": {
                queue.name: {
                    "purpose": queue.purpose,
                    "max_dispatches_per_second": queue.max_dispatches_per_second,
                    "service": _service(queue.route),
                }
                for queue in QUEUES
            },
        }
    }


def text() -> str:
    return json.dumps(render(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.terraform_topology", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs from the registry")
    args = parser.parse_args(argv)
    if args.check:
        if not TFVARS.exists() or TFVARS.read_text() != text():
            print(f"{TFVARS} is stale: run `make terraform-topology`", file=sys.stderr)
            return 1
        return 0
    TFVARS.write_text(text())
    print(f"wrote {TFVARS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
