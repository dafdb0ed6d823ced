"""The cloud-shaped emulator run: every service starts with exactly the env Terraform gives it on Cloud Run,
the cloud's endpoints swapped for the emulators', and a page is archived end to end.

Terraform itself renders the env (``terraform console``, offline): the ``locals`` of terraform/*.tf
with the example tfvars and the generated topology, each reference to a resource attribute (known
only after an apply) replaced by a value of the same shape, e.g. a service account's email. Which
local each service's env comes from is read from its resource or module block (python-hcl2).
What this proves is that the configuration Terraform writes is one the code accepts and runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import requests
from hcl2 import SerializationOptions

from emulators.stack import API, Stack
from htbase.config import Settings
from htbase.topology import HOUSEKEEPING, QUEUES, ROUTES
from tests.helpers import HttpApi, finished, submit, terraform_console, wait_for

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM = ROOT / "terraform"
HTBASE = str(Path(sys.executable).parent / "htbase")
HCL = SerializationOptions(strip_string_quotes=True, explicit_blocks=False)
# A resource's (or a data source's) attribute, e.g. google_service_account.role["api"].email.
RESOURCE_REFERENCE = re.compile(
    r"\b(?:data\.)?((?:google|random)_[a-z0-9_]+)\.([a-z0-9_]+)((?:\[[^\]]+\])?)\.([a-z_]+)"
)

# What only the cloud has, and what stands for it here. Everything else a service is given stays as
# Terraform wrote it (RUN_MIGRATIONS=false, pool sizes, timeouts, the project, prefix and bucket...).
CLOUD_ONLY = (
    "INSTANCE_CONNECTION_NAME",
    "CLOUD_SQL_IP_TYPE",
    "CLOUD_SQL_IAM_AUTH",  # the connector: DATABASE_URL instead
    "PUSH_AUDIENCE",
    "PUSH_SERVICE_ACCOUNT",
    "PUSH_ALLOWED_SERVICE_ACCOUNTS",  # OIDC: PUSH_AUTH_TOKEN instead
    "SIGNED_URL_SERVICE_ACCOUNT",  # IAM signBlob: downloads are streamed
    "TELEMETRY_EXPORTER",  # Cloud Trace and Cloud Monitoring have no emulator: telemetry is off
)
EMULATED = (
    "DATABASE_URL",
    "PUBSUB_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "PUSH_AUTH_TOKEN",
)


def parse(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=HCL)


def expression(value: str) -> str:
    """The Terraform expression of a parsed attribute (``${...}``)."""
    assert value.startswith("${") and value.endswith("}"), value
    return value[2:-1]


def env_sources(container: dict) -> dict[str, str]:
    """A container's env: the expressions of its plain and its secret ``dynamic "env"`` blocks."""
    sources = {}
    for block in container["dynamic"]:
        if "env" in block:
            kind = "secrets" if "value_source" in block["env"]["content"][0] else "env"
            sources[kind] = expression(block["env"]["for_each"])
    assert set(sources) == {"env", "secrets"}, sources
    return sources


def service_envs() -> str:
    """The console expression of every service's env, read off the blocks that set it."""
    run, jobs = parse(TERRAFORM / "run.tf"), parse(TERRAFORM / "jobs.tf")
    api = next(r for r in run["resource"] if "google_cloud_run_v2_service" in r)["google_cloud_run_v2_service"]["api"]
    job = next(r for r in jobs["resource"] if "google_cloud_run_v2_job" in r)["google_cloud_run_v2_job"]["migrate"]
    worker = run["module"][0]["worker"]
    # The module hands env and secret_env to the same two dynamic blocks (modules/push_service).
    module = parse(TERRAFORM / "modules" / "push_service" / "main.tf")["resource"][0]
    module_container = module["google_cloud_run_v2_service"]["this"]["template"][0]["containers"][0]
    assert env_sources(module_container) == {"env": "var.env", "secrets": "var.secret_env"}

    def each(value: str) -> str:
        return expression(value).replace("each.key", "key").replace("each.value", "value")

    api_sources = env_sources(api["template"][0]["containers"][0])
    job_sources = env_sources(job["template"][0]["template"][0]["containers"][0])
    return (
        "jsonencode({"
        f"api = {{env = {api_sources['env']}, secrets = {api_sources['secrets']}}}, "
        f"migrate = {{env = {job_sources['env']}, secrets = {job_sources['secrets']}}}, "
        f"workers = {{for key, value in {expression(worker['for_each'])} : key => {{"
        f"env = {each(worker['env'])}, secrets = {each(worker['secret_env'])}, target = {each(worker['target'])}"
        "}}, "
        # The first version of every secret a service reads, as Terraform writes it to Secret Manager.
        "secret_values = {for id in distinct(flatten([for account, env in local.secret_env : values(env)])) : "
        "id => local.secret_values[id]}"
        "})"
    )


def resource_stand_ins(locals_text: str) -> tuple[str, str]:
    """``locals_text`` with each resource attribute read from a local of its own, and those locals:
    a value shaped like the one an apply would give (an email for ``email``, the project for ``project``)."""
    stand_ins: dict[tuple[str, str], set[str]] = {}
    for kind, name, _, attribute in RESOURCE_REFERENCE.findall(locals_text):
        stand_ins.setdefault((kind, name), set()).add(attribute)
    rewritten = RESOURCE_REFERENCE.sub(lambda m: f"local.{m[1]}__{m[2]}{m[3]}.{m[4]}", locals_text)
    sources = "\n".join(path.read_text() for path in sorted(TERRAFORM.glob("*.tf")))
    blocks = []
    for (kind, name), attributes in sorted(stand_ins.items()):
        for_each = re.search(rf'^resource "{kind}" "{name}" {{\n\s+for_each\s+=\s+(.+)$', sources, re.M)
        key = "${key}" if for_each else name
        shape = "{ " + ", ".join(f"{a} = {stand_in(a, key)}" for a in sorted(attributes)) + " }"
        body = f"{{ for key, _ in {for_each[1]} : key => {shape} }}" if for_each else shape
        blocks.append(f"  {kind}__{name} = {body}")
    return rewritten, "locals {\n" + "\n".join(blocks) + "\n}\n"


def stand_in(attribute: str, key: str) -> str:
    """The expression of a value like the one the resource ``key`` would have for ``attribute``."""
    if attribute == "email":
        return f'"{key}@${{var.project_id}}.iam.gserviceaccount.com"'
    if attribute == "project":
        return "var.project_id"
    if attribute == "secret_id":
        return f'"{key}"'
    return f'"${{var.prefix}}{key}"'


def render(work: Path, tfvars: dict[str, str]) -> dict:
    """Every service's env as Terraform writes it, with ``tfvars`` beside the example's: {api, migrate,
    workers: {name: {env, secrets, target}}, secret_values: {secret id: value}}, where ``secrets`` maps
    an env name to a secret id."""
    blocks = [
        block
        for path in sorted(TERRAFORM.glob("*.tf"))
        for block in re.findall(r"^locals \{\n.*?^\}\n", path.read_text(), re.M | re.S)
    ]
    # Locals over the services' outputs (Cloud Build's roll-out list) are not the services' env.
    rewritten, stand_ins = resource_stand_ins("\n".join(b for b in blocks if "module." not in b))
    for source in ("variables.tf", "topology.auto.tfvars.json"):
        shutil.copy(TERRAFORM / source, work)
    (work / "locals.tf").write_text(rewritten)
    (work / "resources.tf").write_text(stand_ins)
    (work / "operator.auto.tfvars.json").write_text(json.dumps(tfvars))
    return terraform_console(work, service_envs(), TERRAFORM / "terraform.tfvars.example")


def on_emulators(rendered: dict, service: str, emulators: dict[str, str]) -> dict[str, str]:
    """A service's cloud env, secrets mounted as env as Cloud Run does, with the emulators standing in
    for what only the cloud has."""
    cloud = {API: rendered["api"], "migrate": rendered["migrate"], **rendered["workers"]}[service]
    env = {name: value for name, value in cloud["env"].items() if name not in CLOUD_ONLY}
    env.update({name: rendered["secret_values"][secret] for name, secret in cloud["secrets"].items()})
    return {**env, **emulators}


@pytest.fixture(scope="module")
def first_key() -> tuple[str, str]:
    """The operator's first step: `htbase keys new` makes the first key and its record, offline."""
    made = subprocess.run([HTBASE, "keys", "new"], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    return lines[1], lines[-1]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, first_key) -> dict:
    """The env of a deployment applied with the first key's record (first_admin_key_record)."""
    return render(tmp_path_factory.mktemp("terraform"), {"first_admin_key_record": first_key[1]})


def test_terraform_renders_an_env_for_every_service_the_stack_runs(rendered, first_key):
    assert {name: worker["target"] for name, worker in rendered["workers"].items()} == {
        r.service: r.target for r in (*ROUTES, HOUSEKEEPING, *(queue.route for queue in QUEUES))
    }
    assert rendered["api"]["env"]["SERVICE_ROLE"] == "api"
    for name, worker in rendered["workers"].items():
        assert set(worker["env"]) >= {"SERVICE_ROLE", "PUSH_AUDIENCE", "INSTANCE_CONNECTION_NAME"}, name
        assert "FIRST_ADMIN_KEY_RECORD" not in worker["env"], name
    # Only the migrate job gets the first key, and only its record.
    assert rendered["migrate"]["env"]["FIRST_ADMIN_KEY_RECORD"] == first_key[1]
    assert "FIRST_ADMIN_KEY_RECORD" not in rendered["api"]["env"]
    assert first_key[0] not in json.dumps(rendered)


@pytest.fixture(scope="module")
def ledger(postgres, rendered, first_key) -> str:
    """The throwaway Postgres for Cloud SQL, migrated as the `migrate` job does it: `htbase migrate`
    with the job's env (all the services start with RUN_MIGRATIONS=false), which adds the first key."""
    with postgres.fresh_database("cloud_") as url:
        env = {"PATH": os.environ["PATH"], **on_emulators(rendered, "migrate", {"DATABASE_URL": url})}
        for outcome in ("added", "already there"):  # the first apply's run, then a roll-out's
            migrated = subprocess.run([HTBASE, "migrate"], env=env, capture_output=True, text=True, timeout=120)
            assert migrated.returncode == 0, migrated.stderr
            assert f"first admin key {first_key[1].split(':')[0]}: {outcome}" in migrated.stdout
        yield url


@pytest.fixture(scope="module")
def api_key(ledger, first_key) -> str:
    """The key the operator kept: the API requires keys (API_KEYS_REQUIRED) and finds this one."""
    return first_key[0]


class KeyedApi(HttpApi):
    """The API as a client holding an API key calls it."""

    def __init__(self, base_url: str, key: str) -> None:
        super().__init__(base_url)
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, **options: Any) -> requests.Response:
        return super().get(path, headers=self.headers, **options)

    def post(self, path: str, json: Any = None, **options: Any) -> requests.Response:
        return super().post(path, json=json, headers=self.headers, **options)


@pytest.fixture(scope="module")
def stack(rendered, ledger, api_key, tmp_path_factory):
    token = secrets.token_urlsafe(24)
    # The stack's own settings (where its bootstrap lays the topology) are the API's: project, prefix,
    # bucket. The stack names a Pub/Sub project of its own; the services take GOOGLE_CLOUD_PROJECT's.
    shared = {k: v for k, v in rendered["api"]["env"].items() if k not in (*CLOUD_ONLY, *EMULATED)}
    shared.setdefault("PUBSUB_PROJECT_ID", shared["GOOGLE_CLOUD_PROJECT"])
    stack = Stack(tmp_path_factory.mktemp("stack"), database_url=ledger, overrides={**shared, "PUSH_AUTH_TOKEN": token})
    emulators = {name: stack.env[name] for name in EMULATED} | {"ALLOW_PRIVATE_URLS": "1"}
    for name in stack.services:
        stack.use_env(name, on_emulators(rendered, name, emulators))
    with stack:
        yield stack


def test_every_service_env_terraform_writes_is_a_valid_configuration(rendered):
    emulators = {
        "DATABASE_URL": "postgresql+pg8000://htbase@127.0.0.1/htbase",
        "PUBSUB_EMULATOR_HOST": "x:1",
        "STORAGE_EMULATOR_HOST": "http://x:2",
        "FIRESTORE_EMULATOR_HOST": "x:3",
        "PUSH_AUTH_TOKEN": "t",
    }
    for name in (API, "migrate", *rendered["workers"]):
        settings = Settings.from_env(on_emulators(rendered, name, emulators))
        assert settings.run_migrations is (name == "migrate"), name


@pytest.mark.browser
def test_a_page_is_archived_and_summarized_by_the_services_terraform_configures(stack, api_key, test_site):
    api = KeyedApi(stack.api_url, api_key)
    task_id = submit(api, test_site.url("/article.html"), archivers=["monolith", "readability"])
    task = finished(api, task_id, timeout_s=240)
    assert task["status"] == "success", task
    page = api.get(f"/api/v2/archives/{task_id}/monolith")
    assert page.status_code == 200 and b"<html" in page.content.lower()
    summary = wait_for(
        lambda: (found := api.get(f"/api/v2/summaries/{task_id}")).status_code == 200 and found,
        timeout_s=120,
        what="the summary",
    )
    assert summary.json()["summary"], summary.text
