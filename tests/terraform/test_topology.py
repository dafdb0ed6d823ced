"""One topology, two renderers: terraform/topology.auto.tfvars.json is htbase/topology.py, and
Terraform names and wires it exactly as the emulator bootstrap does."""

from __future__ import annotations

import re

import pytest

import functions.main
from emulators import terraform_topology
from emulators.bootstrap import topology as bootstrap_topology
from htbase.config import Settings
from htbase.topology import ACK_DEADLINE_S, PUSH_SERVICES
from tests.terraform.conftest import TOPOLOGY


def test_the_committed_topology_is_the_registry():
    assert TOPOLOGY.read_text() == terraform_topology.text(), "stale: run `make terraform-topology` and commit it"


def test_check_mode_fails_on_a_stale_file_and_passes_once_rewritten(tmp_path, monkeypatch):
    stale = tmp_path / "topology.auto.tfvars.json"
    stale.write_text('{"topology": {}}\n')
    monkeypatch.setattr(terraform_topology, "TFVARS", stale)
    assert terraform_topology.main(["--check"]) == 1
    assert terraform_topology.main([]) == 0
    assert terraform_topology.main(["--check"]) == 0


def squeeze(expression: str) -> str:
    return re.sub(r"\s+", " ", expression)


def test_terraform_iterates_over_the_topology(root):
    topic = root.resources["google_pubsub_topic", "topic"]
    subscription = root.resources["google_pubsub_subscription", "push"]
    queue = root.resources["google_cloud_tasks_queue", "queue"]
    assert topic["for_each"] == subscription["for_each"] == "${var.topology.routes}"
    assert queue["for_each"] == "${var.topology.queues}"
    assert root.modules["worker"]["for_each"] == "${local.workers}"
    workers = squeeze(root.locals["workers"])
    assert "for route in values(var.topology.routes) : route.service =>" in workers
    assert "(var.topology.housekeeping.service) =" in workers
    assert "target = route.target" in workers and "env = route.env" in workers
    assert root.modules["worker"]["target"] == "${each.value.target}"
    # Names as emulators/bootstrap.py and the code (TOPIC_PREFIX) spell them.
    assert topic["name"] == queue["name"] == "${var.prefix}${each.key}"
    assert subscription["name"] == "${google_pubsub_topic.topic[each.key].name}-push"
    assert root.locals["shared_env"]["TOPIC_PREFIX"] == "${var.prefix}"


@pytest.mark.parametrize("prefix", ["htbase-", "staging-"])
def test_terraform_creates_what_the_bootstrap_creates(topology, root, prefix):
    settings = Settings(topic_prefix=prefix, retry_backoff_s=10.0, max_delivery_attempts=7)
    plan = bootstrap_topology(settings, {service: f"https://{service}.example" for service in PUSH_SERVICES})
    routes = topology["routes"]

    assert set(plan.topics) == {prefix + topic for topic in routes}
    by_name = {prefix + topic + "-push": route for topic, route in routes.items()}
    assert {sub.name for sub in plan.subscriptions} == set(by_name)
    for sub in plan.subscriptions:
        route = by_name[sub.name]
        assert sub.topic == sub.name.removesuffix("-push")
        assert sub.service == route["service"]
        assert bool(sub.dead_letter_topic) == route["dead_lettered"]
        assert sub.dead_letter_topic in ("", prefix + topology["dead_letter_topic"])
        assert sub.ack_deadline_s == topology["ack_deadline_seconds"] == ACK_DEADLINE_S
        assert sub.max_backoff_s == max(topology["max_backoff_seconds"], settings.retry_backoff_s)
    assert {queue.name: queue.max_dispatches_per_second for queue in plan.queues} == {
        prefix + name: queue["max_dispatches_per_second"] for name, queue in topology["queues"].items()
    }

    # The same settings, spelled in HCL.
    subscription = root.resources["google_pubsub_subscription", "push"]
    assert subscription["ack_deadline_seconds"] == "${var.topology.ack_deadline_seconds}"
    retry = subscription["retry_policy"][0]
    assert retry["minimum_backoff"] == "${var.retry_backoff_seconds}s"
    assert retry["maximum_backoff"] == "${max(var.topology.max_backoff_seconds, var.retry_backoff_seconds)}s"
    assert root.locals["shared_env"]["RETRY_BACKOFF_SECONDS"] == "${tostring(var.retry_backoff_seconds)}"
    assert root.locals["shared_env"]["MAX_DELIVERY_ATTEMPTS"] == "${tostring(var.max_delivery_attempts)}"


def test_every_service_runs_a_target_of_functions_main_that_matches_its_archivers(topology):
    queued = [queue["service"] for queue in topology["queues"].values()]
    assert [route["target"] for route in queued] == ["deliver_webhook"]
    for route in [*topology["routes"].values(), topology["housekeeping"], *queued]:
        assert callable(getattr(functions.main, route["target"], None)), route["target"]
        assert route["env"]["SERVICE_ROLE"] == route["role"]
        if route["archiver"]:
            assert route["target"] == f"archive_{route['archiver']}"
            assert route["env"]["ARCHIVERS"] == route["archiver"]
        else:
            assert "ARCHIVERS" not in route["env"]
