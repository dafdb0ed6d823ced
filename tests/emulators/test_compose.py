"""The container files: the compose file validates offline (no Docker engine needed), its services
and env match what the code reads, and the Dockerfile passes hadolint."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from functions import main
from htbase import topology
from htbase.config import Settings
from htbase.messages import ARCHIVERS
from tests.helpers import settings_env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "emulators" / "docker-compose.yml"
EXAMPLE_ENV = ROOT / "emulators" / "compose.env.example"
SECRETS_ENV = ROOT / "emulators" / "compose.env"
HTBASE_IMAGES = {"htbase:local": "browser", "htbase-light:local": "light"}  # image: its Dockerfile target
EMULATORS = {"pubsub", "firestore", "gcs", "tasks", "postgres"}
# Bootstrap points a push subscription or a Cloud Tasks queue at each, by name.
PUSH_SERVICES = set(topology.PUSH_SERVICES) | set(topology.QUEUE_SERVICES)
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is not installed (requirements/dev.txt; docker-compose: apt-get install docker-compose)"
    return found


def compose(*args: str, env_file: Path | None = EXAMPLE_ENV) -> subprocess.CompletedProcess:
    env_args = ["--env-file", str(env_file)] if env_file else []
    # A clean environment: only the env file may supply the variables the file interpolates.
    return subprocess.run(
        [tool("docker-compose"), *env_args, "-f", str(COMPOSE), *args],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        timeout=60,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    result = compose("--profile", "vps", "config")
    assert result.returncode == 0, result.stderr
    # docker-compose 1.x resolves every service; the vps profile's are these.
    return {name: spec for name, spec in yaml.safe_load(result.stdout)["services"].items() if "vps" in spec["profiles"]}


def htbase_services(services: dict[str, dict]) -> dict[str, dict]:
    return {name: spec for name, spec in services.items() if spec.get("image") in HTBASE_IMAGES}


def test_only_the_archivers_get_the_browser_image(services):
    images = {name: (spec["image"], spec["build"]["target"]) for name, spec in htbase_services(services).items()}
    assert all(HTBASE_IMAGES[image] == target for image, target in images.values()), images
    browser = {name for name, (image, _) in images.items() if HTBASE_IMAGES[image] == "browser"}
    assert browser == {f"archiver-{archiver}" for archiver in ARCHIVERS}


def test_the_recorder_sees_every_setting():
    assert {
        "DATABASE_URL",
        "PUSH_AUTH_TOKEN",
        "PUSH_AUDIENCE",
        "ARCHIVERS",
        "PUBSUB_EMULATOR_HOST",
        "GOOGLE_CLOUD_PROJECT",
        "LLM_API_KEY",
    } <= settings_env_names()


@pytest.mark.parametrize(
    "profile, expected",
    [
        ("emulators", EMULATORS),
        ("vps", EMULATORS | PUSH_SERVICES | {"api", "bootstrap"}),
        ("monitoring", {"otel-collector", "jaeger", "prometheus", "alertmanager"}),
    ],
)
def test_each_profile_validates_offline_and_runs_its_services(profile, expected):
    result = compose("--profile", profile, "config")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert {name for name, spec in resolved.items() if profile in spec["profiles"]} == expected


def test_the_secrets_come_from_the_env_file(tmp_path):
    missing = compose("--profile", "vps", "config", env_file=None)
    assert missing.returncode != 0 and "set it in emulators/compose.env" in missing.stderr
    # Every secret in the resolved file is the env file's value, not a literal of the compose file.
    secrets = {"POSTGRES_PASSWORD": "pg-f00d", "PUSH_AUTH_TOKEN": "push-c0ffee", "LLM_API_KEY": "llm-beef"}
    env_file = tmp_path / "compose.env"
    env_file.write_text(EXAMPLE_ENV.read_text() + "".join(f"{k}={v}\n" for k, v in secrets.items()))
    result = compose("--profile", "vps", "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == secrets["POSTGRES_PASSWORD"]
    for name, spec in htbase_services(services).items():
        assert spec["environment"]["PUSH_AUTH_TOKEN"] == secrets["PUSH_AUTH_TOKEN"], name
        assert f":{secrets['POSTGRES_PASSWORD']}@postgres:" in spec["environment"]["DATABASE_URL"], name
    assert [name for name, spec in services.items() if "LLM_API_KEY" in spec.get("environment", {})] == ["summarizer"]
    assert services["summarizer"]["environment"]["LLM_API_KEY"] == secrets["LLM_API_KEY"]


def test_the_secrets_env_file_is_git_ignored():
    ignored = subprocess.run(["git", "check-ignore", "-q", str(SECRETS_ENV)], cwd=ROOT)
    assert ignored.returncode == 0, f"{SECRETS_ENV.relative_to(ROOT)} must be git-ignored: it holds the secrets"


def test_every_env_name_a_service_sets_is_one_settings_reads(services):
    names = settings_env_names()
    for name, spec in htbase_services(services).items():
        unknown = set(spec["environment"]) - names
        assert not unknown, f"{name} sets {sorted(unknown)}, which Settings.from_env never reads"
        settings = Settings.from_env(spec["environment"])  # and they make a valid configuration
        assert (settings.broker, settings.file_storage_provider) == ("pubsub", "gcs")
        assert settings.database_url.startswith("postgresql+pg8000://") and settings.push_auth_token


def test_each_push_service_runs_its_own_target(services):
    for name in PUSH_SERVICES:
        spec = services[name]
        assert spec["entrypoint"][:3] == ["functions-framework", "--source", "functions/main.py"], name
        flag, target = spec["command"]
        assert flag == "--target" and callable(getattr(main, target, None)), f"{name}: no target {target!r}"
    for archiver in ARCHIVERS:  # ARCHIVERS, --target and the service name agree
        spec = services[f"archiver-{archiver}"]
        settings = Settings.from_env(spec["environment"])
        assert (settings.service_role, settings.archivers) == ("archiver", (archiver,))
        assert spec["command"] == ["--target", f"archive_{archiver}"]
    assert services["summarizer"]["command"] == ["--target", "summarize"]
    assert services["dead-letter"]["command"] == ["--target", "dead_letter"]
    assert Settings.from_env(services["api"]["environment"]).service_role == "api"
    assert "command" not in services["api"]  # the image's default: htbase serve


def test_only_the_api_is_reachable_from_outside(services):
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    assert set(published) == EMULATORS | {"api"}  # no push service, no bootstrap
    for name in EMULATORS:
        for port in published[name]:  # for a developer on the host, never beyond it
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_long_running_services_have_health_checks_restart_policies_and_wait_for_bootstrap(services):
    for name, spec in services.items():
        if name == "bootstrap":
            continue
        assert spec["restart"] == "unless-stopped", name
        assert spec["healthcheck"]["test"][0] == "CMD", name
    job = services["bootstrap"]
    assert job["command"][:3] == ["python", "-m", "emulators.bootstrap"] and job["restart"] == "no"
    assert job["depends_on"] == {name: {"condition": "service_healthy"} for name in EMULATORS}
    for name in htbase_services(services).keys() - {"bootstrap"}:
        assert services[name]["depends_on"] == {"bootstrap": {"condition": "service_completed_successfully"}}
    # State that must outlive a container lives on named volumes.
    assert services["postgres"]["volumes"] == ["pgdata:/var/lib/postgresql/data:rw"]
    assert services["gcs"]["volumes"] == ["gcsdata:/storage:rw"]


def test_each_archiver_is_held_to_its_memory_without_swap(services):
    limits = {name: (spec.get("mem_limit"), spec.get("memswap_limit")) for name, spec in services.items()}
    assert {name: limits[name] for name in (f"archiver-{archiver}" for archiver in ARCHIVERS)} == {
        "archiver-singlefile": ("3g", "3g"),  # Chromium, and SingleFile's Node heap (1 GB)
        "archiver-monolith": ("1g", "1g"),  # no browser
        "archiver-readability": ("2g", "2g"),
        "archiver-pdf": ("2g", "2g"),
        "archiver-screenshot": ("2g", "2g"),
    }


def test_the_compose_file_passes_yamllint():
    files = [str(COMPOSE), *map(str, sorted((ROOT / "emulators" / "monitoring").glob("*.y*ml")))]
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "-s", "-d", YAMLLINT_CONFIG, *files], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_passes_hadolint_and_sets_only_names_settings_reads():
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env_names = {name for line in re.findall(r"^ENV (.+)$", dockerfile, re.M) for name in re.findall(r"(\w+)=", line)}
    python_own = {name for name in env_names if name.startswith(("PYTHON", "PIP_"))}
    assert env_names - python_own <= settings_env_names(), sorted(env_names - python_own - settings_env_names())
    assert re.findall(r"^CMD .+$", dockerfile, re.M) == ['CMD ["htbase", "serve", "--host", "0.0.0.0"]']
