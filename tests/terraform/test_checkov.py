"""checkov over terraform/: its built-in GCP checks (each skip listed with a reason in
terraform/checkov/skips.yaml) and the project's own policies for Cloud Run and Pub/Sub push,
which checkov has no built-in check for. checkov runs offline from its own virtualenv."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.terraform.conftest import ROOT, TERRAFORM

REQUIREMENTS = ROOT / "requirements" / "checkov.txt"
POLICIES = TERRAFORM / "checkov" / "policies"
SKIPS = TERRAFORM / "checkov" / "skips.yaml"
# Beside the project's virtualenv (and removed with it): checkov's bc-python-hcl2 would replace python-hcl2.
VENV = Path(sys.prefix) / "checkov"
pytestmark = pytest.mark.timeout(900)  # the first run builds checkov's virtualenv


def checkov_venv() -> Path:
    """checkov installed exactly as requirements/checkov.txt pins it, rebuilt when that file changes."""
    stamp = VENV / "requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text() != digest:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest)
    return VENV / "bin" / "checkov"


@pytest.fixture(scope="module")
def report() -> dict:
    skips = yaml.safe_load(SKIPS.read_text())
    result = subprocess.run(
        [str(checkov_venv()), "--directory", str(TERRAFORM), "--framework", "terraform",
         "--external-checks-dir", str(POLICIES), "--skip-check", ",".join(skips),
         "--skip-download", "--compact", "--output", "json"],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},  # no download of Bridgecrew's mapping
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.stdout, result.stderr
    report, _ = json.JSONDecoder().raw_decode(result.stdout)  # the JSON, then checkov's footer
    return report


def passed(report: dict, check_id: str) -> set[str]:
    return {check["resource"] for check in report["results"]["passed_checks"] if check["check_id"] == check_id}


def test_checkov_finds_nothing(report):
    failures = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}"
                for c in report["results"]["failed_checks"]]  # fmt: skip
    assert failures == []
    assert report["summary"]["parsing_errors"] == 0


def test_every_skipped_check_has_a_reason():
    skips = yaml.safe_load(SKIPS.read_text())
    assert skips and all(check_id.startswith("CKV") and len(reason.split()) >= 8 for check_id, reason in skips.items())


def test_the_projects_policies_ran_on_every_service_and_subscription(report, topology):
    services = {"google_cloud_run_v2_service.api", "module.worker.google_cloud_run_v2_service.this"}
    subscriptions = {f'google_pubsub_subscription.push["{topic}"]' for topic in topology["routes"]}
    ids = {yaml.safe_load(path.read_text())["metadata"]["id"]: path.name for path in POLICIES.glob("*.yaml")}
    expected = {
        "CKV2_HTBASE_1": services,  # gen2
        "CKV2_HTBASE_2": services,  # startup CPU boost
        "CKV2_HTBASE_3": services | {"google_cloud_run_v2_job.migrate"},  # own service account
        "CKV2_HTBASE_4": services,  # push targets internal only
        "CKV2_HTBASE_6": subscriptions,  # OIDC push
        "CKV2_HTBASE_7": subscriptions,  # ack 600, retry, no expiry
    }
    assert set(ids) == set(expected) | {"CKV2_HTBASE_5"}
    for check_id, resources in expected.items():
        assert passed(report, check_id) == resources, ids[check_id]
    # Nobody anonymous invokes anything; the API's optional public grant is the one, reasoned, exception.
    skipped = {(c["check_id"], c["resource"]) for c in report["results"]["skipped_checks"]}
    assert skipped == {("CKV2_HTBASE_5", "google_cloud_run_v2_service_iam_member.api_public")}
