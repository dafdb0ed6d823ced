"""The cloud's first API key: `htbase keys new` makes it and its record without a ledger, `htbase migrate`
adds the record from FIRST_ADMIN_KEY_RECORD once, and an API on a ledger nobody migrated says what to do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from api.auth import start_notice
from htbase.config import KEY_RECORD, ConfigError, Settings
from infra.db import make_engine
from infra.keys import KEY, ApiKeys
from service.cli import FIRST_ADMIN_KEY, main


@pytest.fixture
def ledger(tmp_path, monkeypatch) -> str:
    """An SQLite ledger the `htbase` command names in its env; not created yet."""
    path = tmp_path / "htbase.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("LOCAL_STORAGE_PATH", str(tmp_path / "archives"))
    monkeypatch.delenv("FIRST_ADMIN_KEY_RECORD", raising=False)
    return str(path)


def new_key(capsys) -> tuple[str, str]:
    assert main(["keys", "new"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return lines[1], lines[-1]


def stored_keys() -> ApiKeys:
    return ApiKeys(make_engine(Settings.from_env()))


def test_keys_new_prints_a_key_and_its_public_record_without_touching_a_ledger(ledger, capsys):
    key, record = new_key(capsys)
    match = KEY.fullmatch(key)
    assert match and KEY_RECORD.fullmatch(record)
    assert record == f"{match[1]}:{hashlib.sha256(key.encode()).hexdigest()}"
    assert key not in record
    assert new_key(capsys)[0] != key
    assert not Path(ledger).exists()


def test_migrate_adds_the_first_admin_key_once(ledger, capsys, monkeypatch):
    key, record = new_key(capsys)
    monkeypatch.setenv("FIRST_ADMIN_KEY_RECORD", record)
    assert main(["migrate"]) == 0
    prefix = record.split(":")[0]
    assert capsys.readouterr().out == f"first admin key {prefix}: added\n"
    found = stored_keys().find(key)
    assert found is not None and found.scope == "admin" and found.name == FIRST_ADMIN_KEY

    # Every roll-out runs the job again: the key stays as it is, revoked if it was revoked.
    stored_keys().revoke(prefix)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out == f"first admin key {prefix}: already there\n"
    assert [info.prefix for info in stored_keys().list()] == [prefix]
    assert stored_keys().find(key) is None


def test_migrate_without_a_record_adds_no_key(ledger, capsys):
    assert main(["migrate"]) == 0
    assert stored_keys().list() == []


@pytest.mark.parametrize("record", ["htb_0123abcd_x", "0123abcd:" + "0" * 63, "0123ABCD:" + "0" * 64])
def test_a_malformed_record_stops_the_command_before_the_ledger(ledger, capsys, monkeypatch, record):
    monkeypatch.setenv("FIRST_ADMIN_KEY_RECORD", record)
    assert main(["migrate"]) == 2
    assert "FIRST_ADMIN_KEY_RECORD must be `prefix:sha256`" in capsys.readouterr().err
    assert not Path(ledger).exists()


def test_an_api_on_a_ledger_nobody_migrated_says_to_run_the_migrate_job(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}", api_keys_required=True)
    engine = make_engine(settings)
    try:
        with pytest.raises(ConfigError, match="no api_keys table.*Run the migrate job first"):
            start_notice(settings, ApiKeys(engine))
    finally:
        engine.dispose()
