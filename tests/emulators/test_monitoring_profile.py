"""The compose "monitoring" profile, offline: the collector's pipelines hold together, Prometheus
scrapes what the collector exports, every htbase service can send there, the alert rules name
metrics that infra/metrics.py declares, and Alertmanager sends the alerts to the configured URL."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from htbase.config import Settings
from tests.emulators.test_compose import compose

MONITORING = Path(__file__).resolve().parents[2] / "emulators" / "monitoring"
METRICS = Path(__file__).resolve().parents[2] / "infra" / "metrics.py"
# Prometheus names of OpenTelemetry instruments: dots as underscores, then the unit's suffix.
SUFFIXES = ("_total", "_seconds", "_bytes", "_seconds_bucket", "_seconds_count", "_seconds_sum")


def load(name: str) -> dict:
    return yaml.safe_load((MONITORING / name).read_text())


def test_the_collector_takes_otlp_and_feeds_jaeger_and_prometheus():
    collector = load("otel-collector.yaml")
    pipelines = collector["service"]["pipelines"]
    for kind, pipeline in pipelines.items():
        assert set(pipeline["receivers"]) <= set(collector["receivers"]), kind
        assert set(pipeline["processors"]) <= set(collector["processors"]), kind
        assert set(pipeline["exporters"]) <= set(collector["exporters"]), kind
    assert pipelines["traces"]["exporters"] == ["otlp/jaeger"] and pipelines["metrics"]["exporters"] == ["prometheus"]
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"

    prometheus = load("prometheus.yml")
    [job] = prometheus["scrape_configs"]
    port = collector["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert job["static_configs"][0]["targets"] == [f"otel-collector:{port}"]
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_every_htbase_service_sends_to_the_collector_when_asked(tmp_path):
    env_file = tmp_path / "compose.env"
    env_file.write_text((MONITORING.parent / "compose.env.example").read_text() + "TELEMETRY_EXPORTER=otlp\n")
    result = compose("--profile", "vps", "--profile", "monitoring", "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    mounted = {volume.split(":")[0] for spec in services.values() for volume in spec.get("volumes", [])}
    files = ("otel-collector.yaml", "prometheus.yml", "alerts.yml", "alertmanager.yml")
    assert {str(MONITORING / name) for name in files} <= mounted
    htbase = {name: spec for name, spec in services.items() if str(spec.get("image", "")).startswith("htbase")}
    assert len(htbase) > 5
    for name, spec in htbase.items():
        settings = Settings.from_env(spec["environment"])
        assert (settings.telemetry_exporter, settings.otlp_endpoint) == ("otlp", "http://otel-collector:4318"), name
    for name in ("jaeger", "prometheus", "alertmanager"):  # the UIs, for the operator on the host only
        assert all(str(port).startswith("127.0.0.1:") for port in services[name]["ports"]), name
    assert "ports" not in services["otel-collector"]


def test_the_alert_rules_name_declared_metrics():
    declared = {name.replace(".", "_") for name in re.findall(r'"(htbase\.[a-z_.]+)"', METRICS.read_text())}
    rules = [rule for group in load("alerts.yml")["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} >= {"DeadLetters", "CaptureFailureRatio", "OutboxBacklog"}
    for rule in rules:
        for name in re.findall(r"\bhtbase_\w+", rule["expr"]):
            base = next((name.removesuffix(s) for s in SUFFIXES if name.endswith(s)), name)
            assert base in declared, (rule["alert"], name)


def test_prometheus_hands_alerts_to_alertmanager_which_posts_them_to_the_configured_url(tmp_path):
    [target] = [t for am in load("prometheus.yml")["alerting"]["alertmanagers"] for t in am["static_configs"]]
    assert target["targets"] == ["alertmanager:9093"]

    alertmanager = load("alertmanager.yml")
    receivers = {receiver["name"]: receiver for receiver in alertmanager["receivers"]}
    [webhook] = receivers[alertmanager["route"]["receiver"]]["webhook_configs"]

    env_file = tmp_path / "compose.env"
    url = "https://alerts.example.org/htbase"
    env_file.write_text((MONITORING.parent / "compose.env.example").read_text() + f"ALERT_WEBHOOK_URL={url}\n")
    result = compose("--profile", "monitoring", "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    service = yaml.safe_load(result.stdout)["services"]["alertmanager"]
    assert service["environment"]["ALERT_WEBHOOK_URL"] == url
    # The entrypoint writes that URL where the receiver reads it, then runs Alertmanager on its config
    # (``config`` prints ``$$``, the escape that reaches the shell as ``$``).
    command = service["entrypoint"][-1]
    assert f'printf %s "$$ALERT_WEBHOOK_URL" > {webhook["url_file"]} &&' in command
    [config] = [v.split(":")[1] for v in service["volumes"] if v.startswith(str(MONITORING / "alertmanager.yml"))]
    assert f"--config.file={config}" in command
