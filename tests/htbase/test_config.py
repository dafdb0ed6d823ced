"""Settings: each declared once, parsed by type from the environment, and the README's table is theirs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from htbase.config import GROUPS, PROJECT_ROOT, ConfigError, Settings, markdown_table

README = PROJECT_ROOT / "README.md"
TABLE = re.compile(r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", re.S)


def test_the_readme_table_is_the_declarations():
    found = TABLE.search(README.read_text())
    assert found, "README.md lost its <!-- settings:begin --> / <!-- settings:end --> markers"
    assert found.group(1) == markdown_table(), (
        "README.md's settings table is stale: paste `python -m htbase.config --markdown` between its markers"
    )


def test_the_table_prints_from_the_command_line():
    printed = subprocess.run(
        [sys.executable, "-m", "htbase.config", "--markdown"], capture_output=True, text=True, check=True
    )
    assert printed.stdout == markdown_table()


def test_every_setting_has_one_env_var_a_meaning_and_a_group():
    declared = fields(Settings)
    names = [f.metadata["env"] for f in declared]
    assert len(names) == len(set(names))
    for f in declared:
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", f.metadata["env"]), f.name
        assert f.metadata["doc"], f.metadata["env"]
        assert f.metadata["group"] in GROUPS, f.metadata["env"]
        assert f"`{f.metadata['env']}`" in markdown_table()


def test_an_empty_environment_gives_the_declared_defaults():
    assert Settings.from_env({}) == Settings(monolith_path=shutil.which("monolith") or "")


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("PORT", "eighty", "PORT must be an integer, got 'eighty'"),
        ("MAX_ATTEMPTS", "2.5", "MAX_ATTEMPTS must be an integer"),
        ("CAPTURE_TIMEOUT", "soon", "CAPTURE_TIMEOUT must be a number, got 'soon'"),
        ("ALLOW_PRIVATE_URLS", "maybe", "ALLOW_PRIVATE_URLS must be one of 1, true, yes, on, 0, false, no, off"),
    ],
)
def test_a_malformed_value_names_its_variable(name, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({name: value})


def test_values_are_parsed_by_type():
    settings = Settings.from_env(
        {
            "PORT": "9090",
            "CAPTURE_TIMEOUT": "2.5",
            "ARCHIVERS": " pdf, screenshot,,",
            "EGRESS_ALLOW_CIDRS": "10.0.0.0/8",
            "LOCAL_STORAGE_PATH": "/srv/archives",
        }
    )
    assert settings.port == 9090
    assert settings.capture_timeout_s == 2.5
    assert settings.archivers == ("pdf", "screenshot")
    assert settings.egress_allow_cidrs == ("10.0.0.0/8",)
    assert settings.local_storage_path == Path("/srv/archives")


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)])
def test_booleans(value, expected):
    assert Settings.from_env({"ALLOW_PRIVATE_URLS": value}).allow_private_urls is expected


def test_empty_means_the_default_except_for_text_where_it_is_a_value():
    settings = Settings.from_env(
        {"PORT": "", "ALLOW_PRIVATE_URLS": "", "ARCHIVERS": "", "TOPIC_PREFIX": "", "SINGLEFILE_PATH": ""}
    )
    assert settings.port == 8080
    assert settings.allow_private_urls is False
    assert settings.archivers == Settings().archivers
    assert settings.topic_prefix == ""  # no prefix
    assert settings.singlefile_path == Settings().singlefile_path  # a path can't be empty


def test_the_settings_that_depend_on_others():
    assert Settings.from_env({}).broker == "embedded"
    assert Settings.from_env({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}).broker == "pubsub"
    assert Settings.from_env({"PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "BROKER": "embedded"}).broker == "embedded"
    assert Settings.from_env({}).pubsub_project_id == "htbase-local"
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"}).pubsub_project_id == "p"
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_PROJECT_ID": "q"}).pubsub_project_id == "q"
    assert (
        Settings.from_env({"LOCAL_STORAGE_PATH": "/srv/htbase/archives"}).database_url
        == "sqlite:////srv/htbase/htbase.db"
    )
    assert Settings.from_env({"LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert Settings.from_env({"MONOLITH_PATH": "/opt/monolith"}).monolith_path == "/opt/monolith"
    assert Settings().monolith_path == ""  # built in code: the built-in inliner


def test_with_changes_a_copy():
    settings = Settings()
    assert settings.with_(port=1).port == 1
    assert settings.port == 8080
