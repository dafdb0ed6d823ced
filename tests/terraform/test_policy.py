"""Policy tests over the parsed HCL of terraform/: what every deployment it makes must hold."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

from htbase.config import KEY_RECORD, PUSH_OVERHEAD_S, Settings
from htbase.messages import ARCHIVERS
from htbase.topology import HOUSEKEEPING, QUEUES, ROUTES
from service.api import ApiService
from tests.helpers import terraform_console
from tests.terraform.conftest import EXAMPLE, TERRAFORM, TOPOLOGY, parse_hcl

# Test and emulator switches that must never reach the cloud.
FORBIDDEN_IN_CLOUD = {
    "PUBSUB_EMULATOR_HOST",
    "FIRESTORE_EMULATOR_HOST",
    "STORAGE_EMULATOR_HOST",
    "PUSH_AUTH_TOKEN",
    "ALLOW_PRIVATE_URLS",
    "EGRESS_ALLOW_CIDRS",
    "OIDC_CERTS_URL",
}
# Variables that take any value of their type, and why.
UNCONSTRAINED = {
    "labels": "any labels",
    "llm_api_key": "any key the provider issues",
    "bucket_location": "any GCS location; the API rejects an unknown one",
    "firestore_location": "any Firestore location; the API rejects an unknown one",
    "github": "any repository connected to Cloud Build",
}
PROJECT_ROLES = {
    "roles/cloudsql.client",
    "roles/cloudsql.instanceUser",
    "roles/cloudtrace.agent",
    "roles/datastore.user",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
}
CONTAINER_RESOURCES = ("google_cloud_run_v2_service", "google_cloud_run_v2_job")


def walk(value: Any) -> Iterator[Any]:
    """Every value in a parsed block, depth first."""
    yield value
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for child in children:
        yield from walk(child)


def blocks(value: Any, key: str) -> Iterator[dict]:
    """Every block named ``key`` anywhere under ``value`` (static or the content of a dynamic one)."""
    for node in walk(value):
        if isinstance(node, dict):
            yield from node.get(key, [])
            for dynamic in node.get("dynamic", []):
                yield from dynamic.get(key, {}).get("content", []) if isinstance(dynamic.get(key), dict) else []


ENV_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_ASSIGNED = re.compile(r"\b([A-Z][A-Z0-9_]*)\s*=(?!=)")
ENV_NAMED = re.compile(r'\benv\s*=\s*"([A-Z][A-Z0-9_]*)"')


def env_names(value: Any) -> set[str]:
    """The env names spelled in a local: upper-case keys, and the ones inside expressions."""
    names: set[str] = set()
    for node in walk(value):
        if isinstance(node, dict):
            names |= {key for key in node if ENV_KEY.match(key)}
        elif isinstance(node, str):
            names |= set(ENV_ASSIGNED.findall(node)) | set(ENV_NAMED.findall(node))
    return names


def cloud_env_names(root, topology) -> set[str]:
    routes = [*topology["routes"].values(), topology["housekeeping"]]
    routes += [queue["service"] for queue in topology["queues"].values()]
    return env_names(root.locals) | {name for route in routes for name in route["env"]}


def containers(module) -> Iterator[tuple[str, dict]]:
    for kind in CONTAINER_RESOURCES:
        for name, body in module.of_type(kind).items():
            for container in blocks(body, "containers"):
                yield f"{kind}.{name}", container


def test_variables_are_typed_described_and_validated(root, push_service):
    for module in (root, push_service):
        for name, body in module.variables.items():
            assert body.get("type") and body.get("description"), name
    for name, body in root.variables.items():
        if body["type"] != "bool" and name not in UNCONSTRAINED:
            assert body.get("validation"), f"{name} takes values that cannot work: validate them"
    assert root.variables["llm_api_key"]["sensitive"] is True


def test_providers_pinned_to_one_major_and_no_registry_modules(root, push_service):
    for module in (root, push_service):
        providers = module.terraform[0]["required_providers"][0]
        for name in ("google", "google-beta"):
            if name in providers:
                assert re.fullmatch(r"~> \d+\.\d+", providers[name]["version"]), name
        assert all(call["source"].startswith("./modules/") for call in module.modules.values())
    assert {"google", "google-beta"} <= set(root.terraform[0]["required_providers"][0])


def test_the_example_and_the_defaults_pass_terraforms_validations(root, variable_values):
    example = {name for name in parse_hcl(EXAMPLE) if name != "__comments__"}
    assert set(example) <= set(root.variables)
    required = {name for name, body in root.variables.items() if "default" not in body and name != "topology"}
    assert required <= set(example) == {"project_id", "image", "region", "api_public"}
    assert variable_values["project_id"] == parse_hcl(EXAMPLE)["project_id"]  # resolved by `terraform console`


def test_every_subscription_pushes_with_oidc_retries_and_dead_letters(root, topology, variable_values):
    assert list(root.of_type("google_pubsub_subscription")) == ["push"]
    subscription = root.resources["google_pubsub_subscription", "push"]
    token = subscription["push_config"][0]["oidc_token"][0]
    assert token == {
        "service_account_email": '${google_service_account.role["push"].email}',
        "audience": "${local.push_audience}",
    }
    assert topology["ack_deadline_seconds"] == 600
    assert subscription["expiration_policy"][0]["ttl"] == ""
    assert subscription["retry_policy"][0]["minimum_backoff"]
    [dead_letter] = [d["dead_letter_policy"] for d in subscription["dynamic"] if "dead_letter_policy" in d]
    assert dead_letter["for_each"] == "${each.value.dead_lettered ? [local.dead_letter_topic] : []}"
    assert dead_letter["content"][0]["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    assert 5 <= variable_values["max_delivery_attempts"] <= 100
    # Every subscription but the dead-letter topic's own hands exhausted messages on.
    assert {topic for topic, route in topology["routes"].items() if not route["dead_lettered"]} == {
        topology["dead_letter_topic"]
    }

    # The token's audience is the one the services list and the code checks.
    assert root.modules["worker"]["audience"] == "${local.push_audience}"
    assert "PUSH_AUDIENCE = local.push_audience" in re.sub(r"\s+", " ", root.locals["push_auth_env"])

    # Pub/Sub's own agent: signs the tokens, publishes dead letters, acknowledges them at the source.
    agent = "${google_project_service_identity.pubsub.member}"
    signs = root.resources["google_service_account_iam_member", "pubsub_signs_push_tokens"]
    assert signs["member"] == agent and signs["role"] == "roles/iam.serviceAccountTokenCreator"
    assert signs["service_account_id"] == '${google_service_account.role["push"].name}'
    publishes = root.resources["google_pubsub_topic_iam_member", "dead_letter_publisher"]
    assert publishes["member"] == agent and publishes["topic"].endswith("[local.dead_letter_topic].id}")
    acknowledges = root.resources["google_pubsub_subscription_iam_member", "dead_letter_source"]
    assert acknowledges["member"] == agent and acknowledges["role"] == "roles/pubsub.subscriber"
    assert "if route.dead_lettered" in acknowledges["for_each"]


def test_workers_take_tokens_of_their_invoker_only(root, push_service):
    service = push_service.resources["google_cloud_run_v2_service", "this"]
    assert service["custom_audiences"] == ["${var.audience}"]
    assert service["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    assert root.modules["worker"]["invokers"] == {
        "${(each.value.invoker)}": "${google_service_account.role[each.value.invoker].member}"
    }
    assert root.modules["worker"]["env"] == "${local.worker_env[each.key]}"
    auth = re.sub(r"\s+", " ", root.locals["push_auth_env"])
    assert 'for invoker in ["push", "scheduler", "tasks"]' in auth
    assert "PUSH_ALLOWED_SERVICE_ACCOUNTS = google_service_account.role[invoker].email" in auth
    # Cloud Scheduler calls housekeeping as its own account, with the same audience.
    scheduler = root.resources["google_cloud_scheduler_job", "housekeeping"]["http_target"][0]
    assert scheduler["oidc_token"][0] == {
        "service_account_email": '${google_service_account.role["scheduler"].email}',
        "audience": "${local.push_audience}",
    }
    assert 'invoker = "scheduler"' in root.locals["workers"]


def test_nobody_invokes_anything_but_the_api_and_that_only_when_asked(root, push_service):
    public = {"allUsers", "allAuthenticatedUsers"}
    for module in (root, push_service):
        for (kind, name), body in module.resources.items():
            assert not kind.endswith(("_iam_binding", "_iam_policy")), f"{kind}.{name}: authoritative IAM"
            if kind.endswith("_iam_member") and body["member"] in public:
                assert (kind, name) == ("google_cloud_run_v2_service_iam_member", "api_public")
    api_public = root.resources["google_cloud_run_v2_service_iam_member", "api_public"]
    assert api_public["count"] == "${var.api_public ? 1 : 0}"
    assert api_public["name"] == "${google_cloud_run_v2_service.api.name}"
    assert root.variables["api_public"]["default"] is False
    invoker = push_service.resources["google_cloud_run_v2_service_iam_member", "invoker"]
    assert invoker["member"] == "${each.value}" and invoker["role"] == "roles/run.invoker"
    assert 'startswith(m, "serviceAccount:")' in push_service.variables["invokers"]["validation"][0]["condition"]


def test_every_env_name_is_one_settings_reads(root, topology):
    names = cloud_env_names(root, topology)
    read = {f.metadata["env"] for f in fields(Settings)}
    assert len(names) > 25  # the scan found the env, not nothing
    assert names - read == set()


def test_no_emulator_shared_token_or_private_urls_in_the_cloud(root, topology):
    assert cloud_env_names(root, topology) & FORBIDDEN_IN_CLOUD == set()
    text = "\n".join(path.read_text() for path in TERRAFORM.rglob("*.tf"))
    assert "EMULATOR" not in text and "PUSH_AUTH_TOKEN" not in text


def test_containers_take_env_only_from_the_checked_locals(root, push_service):
    sources = {
        "google_cloud_run_v2_service.api": {"${local.api_env}", "${local.secret_env.api}"},
        "google_cloud_run_v2_job.migrate": {"${local.migrate_env}", "${local.secret_env.migrate}"},
        "google_cloud_run_v2_service.this": {"${var.env}", "${var.secret_env}"},
    }
    for module in (root, push_service):
        for where, container in containers(module):
            assert "env" not in container, f"{where}: env comes from the checked locals only"
            assert {d["env"]["for_each"] for d in container["dynamic"] if "env" in d} == sources[where]
    assert root.modules["worker"]["secret_env"] == "${local.secret_env[each.value.kind]}"


def test_secrets_reach_services_only_through_secret_key_ref(root, push_service):
    for module in (root, push_service):
        for where, container in containers(module):
            for dynamic in container["dynamic"]:
                for content in dynamic.get("env", {}).get("content", []):
                    if "value_source" in content:
                        assert content["value_source"][0]["secret_key_ref"][0] == {
                            "secret": "${env.value}",
                            "version": "latest",
                        }, where
                        assert dynamic["env"]["for_each"].startswith(("${local.secret_env", "${var.secret_env")), where
    # A secret's env name is never a plain value, except the password-less DATABASE_URL of IAM login.
    secret_envs = set(re.findall(r'env\s*=\s*"([A-Z_]+)"', root.locals["secrets"]))
    assert secret_envs == {"DATABASE_URL", "WEBHOOK_SECRET", "LLM_API_KEY"}
    plain = env_names({name: value for name, value in root.locals.items() if name not in ("secrets", "secret_env")})
    assert plain & secret_envs == {"DATABASE_URL"}
    database_env = re.sub(r"\s+", " ", root.locals["database_env"])
    assert re.search(
        r'DATABASE_URL = "postgresql\+pg8000://\$\{urlencode\(local\.database_users\[account\]\)\}@/', database_env
    )
    assert database_env.endswith("name => value if var.database_iam_auth}}}")
    # Secret values come from nowhere but the secrets' first versions.
    for path in TERRAFORM.rglob("*.tf"):
        if path.name not in ("secrets.tf", "sql.tf"):
            assert "random_password" not in path.read_text(), path.name
        if path.name not in ("secrets.tf", "variables.tf"):
            assert "var.llm_api_key" not in path.read_text(), path.name


def test_archivers_fit_a_chromium_and_answer_within_the_ack_deadline(root, push_service, variable_values, topology):
    archiver, summarizer = variable_values["archiver_service"], variable_values["summarizer_service"]
    ack = topology["ack_deadline_seconds"]
    assert 2 <= archiver["concurrency"] <= 4
    longest_capture = max(variable_values["capture_timeout_seconds"], variable_values["max_capture_timeout_seconds"])
    assert longest_capture + PUSH_OVERHEAD_S <= archiver["timeout_seconds"] <= ack
    assert variable_values["llm"]["summary_timeout_seconds"] + PUSH_OVERHEAD_S <= summarizer["timeout_seconds"] <= ack
    for name in ("capture_timeout_seconds", "max_capture_timeout_seconds", "llm"):
        assert any(f"+ {PUSH_OVERHEAD_S:g} <=" in v["condition"] for v in root.variables[name]["validation"]), name
    assert archiver["memory"].endswith("Gi") and int(archiver["memory"][:-2]) >= 2
    assert summarizer["max_instances"] == 1  # README, Summaries: the rate limit belongs to one instance
    kinds = re.sub(r"\s+", " ", root.locals["workers"])
    assert 'kind = route.archiver != "" ? "archiver"' in kinds
    assert root.locals["sizing"]["archiver"] == "${var.archiver_service}"
    assert root.modules["worker"]["sizing"] == "${local.sizing[each.value.kind]}"

    service = push_service.resources["google_cloud_run_v2_service", "this"]
    template = service["template"][0]
    assert template["execution_environment"] == "EXECUTION_ENVIRONMENT_GEN2"
    assert template["timeout"] == "${var.sizing.timeout_seconds}s"
    assert template["max_instance_request_concurrency"] == "${var.sizing.concurrency}"
    container = template["containers"][0]
    assert container["command"] == ["functions-framework"]
    assert container["args"] == ["--source", "/app/functions/main.py", "--target", "${var.target}"]
    assert container["resources"][0]["startup_cpu_boost"] is True
    assert root.locals["kind_env"]["archiver"]["CAPTURE_TIMEOUT"] == "${tostring(var.capture_timeout_seconds)}"
    assert root.locals["kind_env"]["archiver"]["MAX_CAPTURE_TIMEOUT"] == "${tostring(var.max_capture_timeout_seconds)}"
    assert root.locals["kind_env"]["summarizer"]["SUMMARY_TIMEOUT"] == "${tostring(var.llm.summary_timeout_seconds)}"


def test_every_service_runs_gen2_with_a_startup_boost(root, push_service):
    for module in (root, push_service):
        for name, service in module.of_type("google_cloud_run_v2_service").items():
            assert service["template"][0]["execution_environment"] == "EXECUTION_ENVIRONMENT_GEN2", name
            assert service["template"][0]["containers"][0]["resources"][0]["startup_cpu_boost"] is True, name


def test_health_probes_use_a_path_cloud_run_does_not_reserve_and_the_api_answers_it(
    root, push_service, embedded_settings
):
    paths = []
    for module in (root, push_service):
        for where, container in containers(module):
            for probe in ("startup_probe", "liveness_probe"):
                for block in container.get(probe, []):
                    assert "http_get" in block or "tcp_socket" in block, where
                    paths += [get["path"] for get in block.get("http_get", [])]
    path = root.locals["api_health_path"]
    assert set(paths) == {"${local.api_health_path}"} and not path.endswith("z")
    service = ApiService(embedded_settings)  # the API's app, not started: no housekeeping thread
    try:
        assert service.api.test_client().get(path).status_code == 200
    finally:
        service.close()


def test_cloud_build_owns_the_images(root, push_service):
    for module in (root, push_service):
        for kind in CONTAINER_RESOURCES:
            for name, body in module.of_type(kind).items():
                ignored = body["lifecycle"][0]["ignore_changes"]
                if kind.endswith("job"):  # and the token of its first run (test_services_start_after_...)
                    expected = {"${template[0].template[0].containers[0].image}", "run_execution_token"}
                else:
                    expected = {"${template[0].containers[0].image}"}
                assert set(ignored) == expected | {"client", "client_version"}, f"{kind}.{name}"
    # The browser image serves the archivers; every other role runs the light one.
    assert 'image = route.archiver != "" ? var.image : local.light_image' in re.sub(r"\s+", " ", root.locals["workers"])
    migrate = root.resources["google_cloud_run_v2_job", "migrate"]["template"][0]["template"][0]["containers"][0]
    assert migrate["image"] == "${local.light_image}" and migrate["command"] == ["htbase", "migrate"]


def test_services_start_after_the_migrate_jobs_first_run_made_the_schema_and_the_first_key(root, variable_values):
    job = root.resources["google_cloud_run_v2_job", "migrate"]
    assert job["provider"] == "google-beta"  # run_execution_token is beta in the pinned 6.x providers
    assert job["name"] == "${var.prefix}migrate"
    assert 16 + len("migrate") + len(job["run_execution_token"]) < 63  # the API's limit; prefix: at most 16
    assert "${google_secret_manager_secret_version.initial}" in job["depends_on"]
    migrate = "${google_cloud_run_v2_job.migrate}"
    assert migrate in root.resources["google_cloud_run_v2_service", "api"]["depends_on"]
    assert migrate in root.modules["worker"]["depends_on"]
    # The first key arrives as its record (a hash), never as a key.
    assert root.locals["migrate_env"]["FIRST_ADMIN_KEY_RECORD"] == "${var.first_admin_key_record}"
    assert "FIRST_ADMIN_KEY_RECORD" not in env_names({k: v for k, v in root.locals.items() if k != "migrate_env"})
    assert variable_values["first_admin_key_record"] == ""
    [validation] = root.variables["first_admin_key_record"]["validation"]
    assert f"^{KEY_RECORD.pattern}$" in validation["condition"]  # the record Settings accepts


def test_bucket_is_uniform_and_never_public(root):
    bucket = root.resources["google_storage_bucket", "archives"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    rules = [d["lifecycle_rule"]["for_each"] for d in bucket["dynamic"] if "lifecycle_rule" in d]
    assert rules and all("var.archive_lifecycle" in rule for rule in rules)
    assert not {kind for kind, _ in root.resources if kind.startswith("google_storage") and kind.endswith("_acl")}


def test_cloud_sql_is_reached_only_through_the_connector_and_backed_up(root):
    instance = root.resources["google_sql_database_instance", "ledger"]
    settings = instance["settings"][0]
    network = settings["ip_configuration"][0]
    assert "authorized_networks" not in network
    assert network["ssl_mode"] == "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
    assert network["ipv4_enabled"] == '${var.private_network == ""}'
    backups = settings["backup_configuration"][0]
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    assert instance["deletion_protection"] == settings["deletion_protection_enabled"] == "${var.deletion_protection}"
    assert {"name": "cloudsql.iam_authentication", "value": "on"} in settings["database_flags"]
    assert {"name": "max_connections", "value": "${tostring(var.sql.max_connections)}"} in settings["database_flags"]
    assert root.resources["google_sql_user", "service"]["type"] == "CLOUD_IAM_SERVICE_ACCOUNT"
    assert root.resources["google_firestore_database", "replica"]["type"] == "FIRESTORE_NATIVE"


def evaluate(root, work, names: tuple[str, ...], expression: str, tfvars: dict | None = None) -> Any:
    """``expression`` as Terraform evaluates it over the root's locals ``names`` (which must refer to
    variables and to each other only) and the variables: the example tfvars, then ``tfvars``."""
    for source in (TERRAFORM / "variables.tf", TOPOLOGY):
        shutil.copy(source, work)
    locals_tf = "".join(f"  {name} = {hcl(root.locals[name])}\n" for name in names)
    (work / "locals.tf").write_text("locals {\n" + locals_tf + "}\n")
    (work / "overrides.auto.tfvars.json").write_text(json.dumps(tfvars or {}))
    return terraform_console(work, f"jsonencode({expression})", EXAMPLE)


def hcl(value: Any) -> str:
    """A parsed attribute written back as an HCL expression."""
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{name}" = {hcl(item)}' for name, item in value.items()) + "}"
    return value[2:-1] if isinstance(value, str) and value.startswith("${") else json.dumps(value)


RUNTIME = {"api", "archiver", "summarizer", "operations"}  # the accounts that run htbase's code
BUILD = '${google_service_account.role["build"].member}'
DELETER = "${google_project_iam_custom_role.object_deleter.name}"
# Every role the module grants anyone, and why; anything owner-, editor- or admin-like is refused below.
ROLES = {
    "roles/artifactregistry.writer": "the build pushes images to the one repository",
    "roles/cloudsql.client": "the connector's IAM-authorized mTLS to the instance",
    "roles/cloudsql.instanceUser": "IAM database login",
    "roles/cloudtasks.enqueuer": "webhook attempts on the one queue",
    "roles/cloudtrace.agent": "spans to Cloud Trace",
    "roles/datastore.user": "the Firestore replica",
    "roles/iam.serviceAccountTokenCreator": "signBlob for signed URLs; the agents mint push and task tokens",
    "roles/iam.serviceAccountUser": "enqueuers name the tasks identity; the build deploys as the runtime accounts",
    "roles/logging.logWriter": "the build's logs (CLOUD_LOGGING_ONLY)",
    "roles/monitoring.metricWriter": "metrics to Cloud Monitoring",
    "roles/pubsub.publisher": "each topic its publishers; the dead-letter topic Pub/Sub's agent",
    "roles/pubsub.subscriber": "Pub/Sub's agent acknowledges dead-lettered messages at their source",
    "roles/run.developer": "the build updates the services and the migrate job",
    "roles/run.invoker": "the workers' callers; the build's smoke test; the API when public",
    "roles/secretmanager.secretAccessor": "each secret its readers",
    "roles/storage.objectCreator": "archivers upload",
    "roles/storage.objectViewer": "downloads, readiness, the listing before a delete",
}
# The basic roles (project-wide owner, editor, viewer) and any service's admin or owner roles.
BROAD_ROLE = re.compile(r"owner|editor|admin|^roles/viewer$", re.I)


def test_the_broad_role_check_catches_owner_editor_and_admin_roles():
    for role in ("roles/owner", "roles/Editor", "roles/viewer", "roles/storage.admin", "roles/run.admin"):
        assert BROAD_ROLE.search(role), role
    assert BROAD_ROLE.search("roles/pubsub.admin") and BROAD_ROLE.search("roles/iam.securityAdmin")
    assert not BROAD_ROLE.search("roles/storage.objectViewer")


def test_every_role_granted_is_listed_with_its_reason_and_none_is_broad(root, push_service):
    text = "\n".join(path.read_text() for path in TERRAFORM.rglob("*.tf"))
    assert set(re.findall(r'"(roles/[^"]+)"', text)) == set(ROLES)
    assert [role for role in ROLES if BROAD_ROLE.search(role)] == []
    for module in (root, push_service):
        assert not [kind for kind, _ in module.resources if kind == "google_service_account_key"]
        assert not [kind for kind, _ in module.resources if kind.startswith("google_organization_iam")]
    # The one custom role deletes objects and nothing else.
    deleter = root.resources["google_project_iam_custom_role", "object_deleter"]
    assert deleter["permissions"] == ["storage.objects.delete"]
    token_creators = {
        name
        for (kind, name), body in root.resources.items()
        if body.get("role") == "roles/iam.serviceAccountTokenCreator"
    }
    assert token_creators == {"api_signs_urls", "pubsub_signs_push_tokens", "cloudtasks_signs_tokens"}
    signs = root.resources["google_service_account_iam_member", "api_signs_urls"]
    assert signs["service_account_id"] == '${google_service_account.role["api"].name}'  # itself, nobody else
    assert signs["member"] == '${google_service_account.role["api"].member}'


def test_the_service_accounts_are_one_per_role(root):
    assert set(root.locals["service_accounts"]) == {
        *RUNTIME, "push", "scheduler", "tasks", "migrate", "build"
    }  # fmt: skip
    assert root.locals["runtime_accounts"] == sorted(RUNTIME, key=["api", "archiver", "summarizer", "operations"].index)


def test_project_grants_per_account(root, tmp_path):
    def grants(iam_auth: bool) -> dict[str, set[str]]:
        found = evaluate(
            root,
            tmp_path,
            ("runtime_accounts", "project_grants"),
            "local.project_grants",
            {"database_iam_auth": iam_auth},
        )
        table: dict[str, set[str]] = {}
        for grant in found.values():
            table.setdefault(grant["account"], set()).add(grant["role"].removeprefix("roles/"))
        return table

    telemetry = {"cloudtrace.agent", "monitoring.metricWriter"}
    runtime = {"cloudsql.client", "datastore.user", *telemetry}
    assert grants(False) == {
        **{account: runtime for account in RUNTIME},
        "migrate": {"cloudsql.client"},
        "build": {"logging.logWriter"},
    }
    assert grants(True) == {
        **{account: runtime | {"cloudsql.instanceUser"} for account in RUNTIME},
        "migrate": {"cloudsql.client"},
        "build": {"logging.logWriter"},
    }


def test_bucket_roles_per_account(root):
    table: dict[str, set[str]] = {}
    for grant in root.locals["bucket_grants"].values():
        table.setdefault(grant["account"], set()).add(grant["role"])
    viewer, creator = "roles/storage.objectViewer", "roles/storage.objectCreator"
    assert table == {
        "api": {viewer, DELETER},  # downloads; DELETE of tasks and items removes their files
        "archiver": {creator, viewer},  # write-once uploads; a redelivery reads the earlier attempt's
        "summarizer": {viewer},  # the article's text
        "operations": {viewer, DELETER},  # readiness; housekeeping retries file removals
    }
    grant = root.resources["google_storage_bucket_iam_member", "grant"]
    assert grant["bucket"] == "${google_storage_bucket.archives.name}"  # the one bucket, never the project


def test_secret_readers_per_secret(root, tmp_path):
    def readers(tfvars: dict) -> dict[str, set[str]]:
        found = evaluate(root, tmp_path, ("runtime_accounts", "secrets"), "local.secrets", tfvars)
        return {secret: set(body["readers"]) for secret, body in found.items()}

    assert readers({"database_iam_auth": True}) == {"database-url": {"migrate"}, "webhook-secret": RUNTIME}
    assert readers({"database_iam_auth": False, "llm_api_key": "sk-test"}) == {
        "database-url": {"migrate", *RUNTIME},
        "webhook-secret": RUNTIME,  # whichever process relays a task's outbox may send its webhook
        "llm-api-key": {"summarizer"},
    }
    reader = root.resources["google_secret_manager_secret_iam_member", "reader"]
    assert reader["for_each"] == "${local.secret_readers}" and reader["role"] == "roles/secretmanager.secretAccessor"
    assert reader["secret_id"] == "${google_secret_manager_secret.secret[each.value.secret].id}"  # per secret


def test_publishers_per_topic_and_enqueuers_per_queue(root, topology, tmp_path):
    found = evaluate(root, tmp_path, ("dead_letter_topic", "topic_publishers"), "local.topic_publishers")
    publishers: dict[str, set[str]] = {}
    for grant in found.values():
        publishers.setdefault(grant["topic"], set()).add(grant["account"])
    work_topics = set(topology["routes"]) - {topology["dead_letter_topic"], topology["summarize_topic"]}
    assert publishers == {
        **{topic: {"api", "operations"} for topic in work_topics},  # new tasks; the outbox relay, expired leases
        topology["summarize_topic"]: {"api", "operations", "archiver"},  # readability done
    }  # and only Pub/Sub's agent publishes dead letters (test_every_subscription_...)
    publisher = root.resources["google_pubsub_topic_iam_member", "publisher"]
    assert publisher["topic"] == "${google_pubsub_topic.topic[each.value.topic].id}"

    queues = evaluate(root, tmp_path, ("runtime_accounts", "queue_enqueuers", "queue_grants"), "local.queue_grants")
    assert {(grant["queue"], grant["account"]) for grant in queues.values()} == {
        ("webhooks", account) for account in RUNTIME
    }
    enqueuer = root.resources["google_cloud_tasks_queue_iam_member", "enqueuer"]
    assert enqueuer["name"] == "${google_cloud_tasks_queue.queue[each.value.queue].name}"
    assert enqueuer["role"] == "roles/cloudtasks.enqueuer"


def test_the_build_account_holds_only_what_a_roll_out_uses(root):
    grants = {
        (kind, name, body["role"]) for (kind, name), body in root.resources.items() if body.get("member") == BUILD
    }
    assert grants == {
        ("google_artifact_registry_repository_iam_member", "build_pushes", "roles/artifactregistry.writer"),
        ("google_service_account_iam_member", "build_acts_as", "roles/iam.serviceAccountUser"),
        ("google_cloud_run_v2_service_iam_member", "build_rolls", "roles/run.developer"),
        ("google_cloud_run_v2_job_iam_member", "build_migrates", "roles/run.developer"),
        ("google_cloud_run_v2_service_iam_member", "build_smoke_tests", "roles/run.invoker"),
    }
    assert root.resources["google_service_account_iam_member", "build_acts_as"]["for_each"] == (
        "${toset(local.deployed_accounts)}"
    )
    assert root.locals["deployed_accounts"] == '${concat(local.runtime_accounts, ["migrate"])}'


def service_kinds() -> dict[str, str]:
    """Each Cloud Run worker service of the topology and its kind (its account and sizing), as run.tf sorts them."""
    routes = (*ROUTES, HOUSEKEEPING, *(queue.route for queue in QUEUES))
    return {
        r.service: "archiver" if r.archiver else "summarizer" if r.role == "summarizer" else "operations"
        for r in routes
    }


def test_database_pools_fit_max_connections(root, variable_values, tmp_path):
    kinds = service_kinds()
    assert list(kinds.values()).count("archiver") == len(ARCHIVERS)
    assert {"webhooks", "housekeeping", "dead-letter"} <= {s for s, k in kinds.items() if k == "operations"}
    api = variable_values["api_service"]
    expected = {
        "api": api["max_instances"] * api["web_workers"] * api["db_pool_size"],
        **{kind: 0 for kind in ("archiver", "summarizer", "operations")},
        "migrate": 1,
    }
    for kind in kinds.values():
        sizing = variable_values[f"{kind}_service"]
        expected[kind] += sizing["max_instances"] * sizing["db_pool_size"]
    reserved = root.locals["database_reserved_connections"]
    assert sum(expected.values()) + reserved <= variable_values["sql"]["max_connections"]

    # Terraform's own sum (sql.tf) comes to the same, per kind, with the defaults.
    names = ("workers", "light_image", "database_connections")
    assert evaluate(root, tmp_path, names, "local.database_connections") == expected

    # Terraform refuses a plan that breaks it, with the same sum.
    [precondition] = root.resources["google_sql_database_instance", "ledger"]["lifecycle"][0]["precondition"]
    assert precondition["condition"] == (
        "${sum(values(local.database_connections)) + local.database_reserved_connections <= var.sql.max_connections}"
    )


def test_outputs_name_what_an_operator_needs(root):
    assert {
        "api_url",
        "service_urls",
        "topic_ids",
        "subscription_ids",
        "bucket",
        "instance_connection_name",
        "repository",
        "migrate_job",
    } <= set(root.outputs)
