"""Policy tests over terraform/monitoring.tf: what pages an operator, and what the dashboard shows.

Every subscription of the topology has a backlog alert, the dead-letter topic has one, every
archiver has a failure-ratio alert, every alert pages the configured channels, and the
dashboard shows each series an alert watches. The names of htbase's own metrics are those
infra/metrics.py declares, as Cloud Monitoring's PromQL spells them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from htbase.messages import ARCHIVERS
from htbase.topology import DEAD_LETTER, ROUTES
from tests.terraform.conftest import TERRAFORM, parse_hcl


def policies(root) -> dict[str, dict]:
    return root.of_type("google_monitoring_alert_policy")


def conditions(policy: dict) -> list[dict]:
    return policy["conditions"]


def metric_types(text: str) -> set[str]:
    return set(re.findall(r'metric\.type = \\?"([^"\\]+)\\?"', text))


def test_every_subscription_has_a_backlog_alert(root, topology):
    backlog = policies(root)["backlog"]
    assert backlog["for_each"] == "${var.topology.routes}"  # one per route: one per push subscription
    assert set(topology["routes"]) == {route.topic for route in ROUTES}
    [condition] = conditions(backlog)
    threshold = condition["condition_threshold"][0]
    assert 'resource.label.subscription_id = "${google_pubsub_subscription.push[each.key].name}"' in threshold["filter"]
    assert metric_types(threshold["filter"]) == {"pubsub.googleapis.com/subscription/oldest_unacked_message_age"}
    assert threshold["comparison"] == "COMPARISON_GT"
    assert threshold["threshold_value"] == "${var.alerts.backlog_age_seconds}"
    # Every subscription in the deployment is one of the routes the alert iterates.
    assert root.resources["google_pubsub_subscription", "push"]["for_each"] == "${var.topology.routes}"


def test_the_dead_letter_topic_alerts_on_anything_arriving(root, topology):
    dead = policies(root)["dead_letter"]
    [condition] = conditions(dead)
    threshold = condition["condition_threshold"][0]
    assert topology["dead_letter_topic"] == DEAD_LETTER
    assert "google_pubsub_topic.topic[local.dead_letter_topic].name" in threshold["filter"]
    assert metric_types(threshold["filter"]) == {"pubsub.googleapis.com/topic/send_message_operation_count"}
    assert threshold["comparison"] == "COMPARISON_GT" and threshold["threshold_value"] == 0
    assert threshold["duration"] == "0s"  # at once: a dead letter is never noise


def test_every_archiver_has_a_failure_ratio_alert(root, topology):
    capture = policies(root)["capture_failures"]
    assert capture["for_each"] == "${local.archivers}"
    archivers = re.sub(r"\s+", " ", root.locals["archivers"])
    assert 'for topic, route in var.topology.routes : route.archiver => route if route.archiver != ""' in archivers
    assert {route["archiver"] for route in topology["routes"].values() if route["archiver"]} == set(ARCHIVERS)
    query = conditions(capture)[0]["condition_prometheus_query_language"][0]["query"]
    assert 'archiver="${each.key}",outcome="failed"' in query and "/ sum(rate(" in query
    assert query.endswith("> ${var.alerts.capture_failure_ratio}")


def test_the_api_cloud_sql_and_outbox_alerts(root):
    found = policies(root)
    errors = conditions(found["api_errors"])[0]["condition_threshold"][0]
    assert 'metric.label.response_code_class = "5xx"' in errors["filter"]
    assert "5xx" not in errors["denominator_filter"]
    assert (
        metric_types(errors["filter"])
        == metric_types(errors["denominator_filter"])
        == {"run.googleapis.com/request_count"}
    )
    assert root.locals["api_requests"].endswith('service_name = "${google_cloud_run_v2_service.api.name}"')
    latency = conditions(found["api_latency"])[0]["condition_threshold"][0]
    assert metric_types(latency["filter"]) == {"run.googleapis.com/request_latencies"}
    assert latency["aggregations"][0]["cross_series_reducer"] == "REDUCE_PERCENTILE_95"
    outbox = conditions(found["outbox_age"])[0]["condition_prometheus_query_language"][0]["query"]
    assert outbox == "max(${local.htbase_metric.outbox_oldest_age}) > ${var.alerts.outbox_oldest_age_seconds}"
    sql = conditions(found["sql_connections"])[0]["condition_threshold"][0]
    assert metric_types(sql["filter"]) == {"cloudsql.googleapis.com/database/postgresql/num_backends"}
    assert sql["threshold_value"] == "${floor(var.sql.max_connections * var.alerts.sql_connections_ratio)}"


def test_every_alert_pages_the_configured_channels(root, variable_values):
    assert set(policies(root)) == {
        "backlog",
        "dead_letter",
        "capture_failures",
        "api_errors",
        "api_latency",
        "outbox_age",
        "sql_connections",
    }
    for name, policy in policies(root).items():
        assert policy["notification_channels"] == "${var.notification_channels}", name
        assert policy["combiner"] == "OR" and policy["documentation"], name
    assert variable_values["notification_channels"] == []
    assert 0 < variable_values["alerts"]["capture_failure_ratio"] < 1


def declared_metric_names() -> set[str]:
    """infra/metrics.py's instruments, as Cloud Monitoring's PromQL names them (dots as underscores)."""
    source = (TERRAFORM.parent / "infra" / "metrics.py").read_text()
    return {name.removeprefix("htbase.").replace(".", "_") for name in re.findall(r'"(htbase\.[a-z_.]+)"', source)}


def test_htbase_metrics_in_alerts_and_dashboard_are_declared(root):
    # { for name in ["captures", ...] : name => "workload_googleapis_com:htbase_${name}" }
    expression = root.locals["htbase_metric"]
    assert 'name => "workload_googleapis_com:htbase_${name}"' in expression
    named = set(re.findall(r'"(\w+)"', expression.split("]", 1)[0]))
    assert named and named <= declared_metric_names()


def dashboard_series(root) -> Iterator[str]:
    for chart in root.locals["dashboard_charts"]:
        yield chart["filter"]
    for chart in root.locals["dashboard_queries"]:
        yield chart["query"]


def test_the_dashboard_shows_what_the_alerts_watch(root):
    dashboard = root.resources["google_monitoring_dashboard", "htbase"]
    assert "jsonencode" in dashboard["dashboard_json"] and "local.dashboard_tiles" in dashboard["dashboard_json"]
    shown = "\n".join(dashboard_series(root))
    for name, policy in policies(root).items():
        for condition in conditions(policy):
            if "condition_threshold" in condition:
                for metric_type in metric_types(condition["condition_threshold"][0]["filter"]):
                    assert metric_type in shown, (name, metric_type)
            else:
                query = condition["condition_prometheus_query_language"][0]["query"]
                for local_name in re.findall(r"local\.htbase_metric\.(\w+)", query):
                    assert f"local.htbase_metric.{local_name}" in shown, (name, local_name)
    # The tiles are laid out from both lists, none left out.
    tiles = re.sub(r"\s+", " ", json.dumps(root.locals["dashboard_tiles"]))
    assert "local.dashboard_charts" in tiles and "local.dashboard_queries" in tiles


def test_telemetry_goes_to_google_cloud_with_the_roles_and_apis_it_needs(root):
    assert root.locals["shared_env"]["TELEMETRY_EXPORTER"] == "gcp"
    assert root.locals["shared_env"]["PROMETHEUS_METRICS"] == "false"
    apis = parse_hcl(TERRAFORM / "apis.tf")["locals"][0]["apis"]
    assert "cloudtrace.googleapis.com" in apis and "monitoring.googleapis.com" in apis
    grants = re.sub(r"\s+", " ", root.locals["project_grants"])
    for role in ("roles/cloudtrace.agent", "roles/monitoring.metricWriter"):
        assert f'for account in local.runtime_accounts : "${{account}}/{role.split("/")[1]}"' in grants, role
