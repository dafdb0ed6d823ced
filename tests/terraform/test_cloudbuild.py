"""cloudbuild.yaml as Cloud Build reads it (the Google Cloud SDK's own loader), in the order a roll-out needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from htbase.topology import HOUSEKEEPING, QUEUES, ROUTES
from tests.terraform.conftest import ROOT

CLOUDBUILD = ROOT / "cloudbuild.yaml"
YAMLLINT_CONFIG = (
    "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"  # as the compose file's
)
LOADER = """
import json, sys
from apitools.base.py import encoding
from googlecloudsdk.api_lib.cloudbuild import cloudbuild_util, config
build = config.LoadCloudbuildConfigFromPath(sys.argv[1], cloudbuild_util.GetMessagesModule())
print(json.dumps(encoding.MessageToDict(build)))
"""
# Cloud Build's own substitutions; any other $NAME must be a declared _NAME or escaped as $$.
BUILT_IN = {
    "PROJECT_ID", "PROJECT_NUMBER", "BUILD_ID", "LOCATION", "TRIGGER_NAME", "COMMIT_SHA", "REVISION_ID",
    "SHORT_SHA", "REPO_NAME", "REPO_FULL_NAME", "BRANCH_NAME", "TAG_NAME", "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH", "SERVICE_ACCOUNT_EMAIL", "SERVICE_ACCOUNT",
}  # fmt: skip


def load(path: Path) -> dict:
    """The build as the SDK parses and validates it (unknown fields, bad substitution keys, no steps)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail("the Google Cloud SDK (gcloud) is not on PATH: its loader checks cloudbuild.yaml", pytrace=False)
    sdk = Path(gcloud).resolve().parent.parent
    python = sdk / "platform" / "bundledpythonunix" / "bin" / "python3"
    result = subprocess.run(
        [str(python), "-c", LOADER, str(path)],
        cwd=sdk,
        env={"PYTHONPATH": f"{sdk / 'lib'}:{sdk / 'lib' / 'third_party'}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise ValueError(result.stderr.strip().splitlines()[-1])
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def build() -> dict:
    return load(CLOUDBUILD)


def test_the_sdk_loader_accepts_it_and_would_refuse_an_unknown_field(build, tmp_path):
    assert build["options"]["logging"] == "CLOUD_LOGGING_ONLY"  # the build's own service account logs there
    broken = tmp_path / "cloudbuild.yaml"
    broken.write_text(CLOUDBUILD.read_text().replace("dynamicSubstitutions:", "dynamicSubstitution:"))
    with pytest.raises(ValueError, match="dynamicSubstitution"):
        load(broken)


def test_it_passes_yamllint():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "-s",
            "-d",
            YAMLLINT_CONFIG,
            str(CLOUDBUILD),
            str(ROOT / "terraform" / "checkov"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout


def test_steps_run_tests_image_push_migrate_then_every_service_then_the_smoke_test(build):
    steps = build["steps"]
    ids = [step["id"] for step in steps]
    assert ids[:5] == ["test", "image", "push", "migrate-update", "migrate"]
    rolls, smoke = ids[5:-1], ids[-1]
    assert smoke == "smoke-test" and rolls and all(step_id.startswith("roll-") for step_id in rolls)
    for step in steps[:5]:
        assert "waitFor" not in step, step["id"]  # each waits for everything before it
    for step in steps[5:-1]:
        assert step["waitFor"] == ["migrate"], step["id"]  # in parallel, once the schema is new
    assert steps[-1]["waitFor"] == rolls
    test = steps[0]["args"][-1]
    assert "ruff check" in test and f'pytest -q -m "{fast_tests()}"\n' in test
    assert steps[4]["args"][:3] == ["run", "jobs", "execute"] and "--wait" in steps[4]["args"]


def fast_tests() -> str:
    """The fast tier's marker expression, as the Makefile gives it to `make test-fast`."""
    [expression] = re.findall(r"^FAST_TESTS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    return expression


def test_every_service_rolls_to_its_image(build, root, topology):
    by_step = {step["id"]: step["args"] for step in build["steps"]}
    # Every service of the topology: each route's, housekeeping and each queue's.
    routes = (*ROUTES, HOUSEKEEPING, *(queue.route for queue in QUEUES))
    services = {"api": "_LIGHT_IMAGE"} | {r.service: "_IMAGE" if r.archiver else "_LIGHT_IMAGE" for r in routes}
    # Terraform deploys the same ones (run.tf: local.workers over the generated topology).
    deployed = [*topology["routes"].values(), topology["housekeeping"]]
    deployed += [queue["service"] for queue in topology["queues"].values()]
    assert {route["service"] for route in deployed} == set(services) - {"api"}
    assert "for queue in values(var.topology.queues) : queue.service.service =>" in " ".join(
        root.locals["workers"].split()
    )
    rolled = {step_id.removeprefix("roll-") for step_id in by_step if step_id.startswith("roll-")}
    assert rolled == set(services)
    for service, image in services.items():
        args = by_step[f"roll-{service}"]
        assert args[:4] == ["run", "services", "update", "${_SERVICE_PREFIX}" + service]
        assert f"--image=${{{image}}}" in args and "--region=${_REGION}" in args
    assert by_step["migrate-update"][:4] == ["run", "jobs", "update", "${_SERVICE_PREFIX}migrate"]
    assert "--image=${_LIGHT_IMAGE}" in by_step["migrate-update"]
    # The names Terraform gives them.
    assert root.resources["google_cloud_run_v2_service", "api"]["name"] == "${var.prefix}api"
    assert root.resources["google_cloud_run_v2_job", "migrate"]["name"] == "${var.prefix}migrate"
    assert root.modules["worker"]["name"] == "${var.prefix}${each.key}"


def test_images_build_from_the_dockerfiles_targets_with_monolith_pinned(build):
    script = next(step for step in build["steps"] if step["id"] == "image")["args"][-1]
    assert 'test -n "${_MONOLITH_SHA256}"' in script
    assert "--build-arg MONOLITH_SHA256=${_MONOLITH_SHA256} --target browser --tag ${_IMAGE}" in script
    assert "--target light --tag ${_LIGHT_IMAGE}" in script
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS browser$", dockerfile, re.M) and re.search(r"^FROM .* AS light$", dockerfile, re.M)
    assert "ARG MONOLITH_SHA256" in dockerfile


def test_substitutions_match_terraform_and_every_reference_is_declared(build, root, variable_values):
    substitutions = build["substitutions"]
    assert substitutions["_REGION"] == root.variables["region"]["default"]
    assert substitutions["_SERVICE_PREFIX"] == root.variables["prefix"]["default"]
    assert substitutions["_REPOSITORY"] == root.variables["prefix"]["default"].rstrip("-")  # registry.tf
    assert root.resources["google_artifact_registry_repository", "images"]["repository_id"] == (
        '${trimsuffix(var.prefix, "-")}'
    )
    trigger = root.resources["google_cloudbuild_trigger", "deploy"]
    assert set(trigger["substitutions"]) <= set(substitutions)
    assert trigger["filename"] == "cloudbuild.yaml"
    assert trigger["service_account"] == '${google_service_account.role["build"].id}'

    text = re.sub(r"^\s*#.*$", "", CLOUDBUILD.read_text(), flags=re.M).replace("$$", "")
    referenced = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text))
    assert referenced - BUILT_IN - set(substitutions) == set()


def test_the_smoke_test_asks_the_api_for_its_health(build, root):
    script = build["steps"][-1]["args"][-1]
    assert f'"$$url{root.locals["api_health_path"]}"' in script
    assert "--audiences=" in script  # an identity token: works whether the API is public or not
