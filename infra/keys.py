"""API keys: made, listed, revoked and checked. Only a hash of each key is stored.

A key reads ``htb_<prefix>_<secret>``: the prefix (8 hex characters) names it in lists
and logs, the secret is 256 random bits. Being that random, a key needs no slow hash:
its sha256 is stored, and a presented key is found by its prefix and compared in
constant time. Scopes nest: ``read`` ⊂ ``write`` ⊂ ``admin``.

A key's public record, ``<prefix>:<sha256>``, is what the ledger keeps of it: ``htbase keys
new`` makes a key and its record without a ledger, and ``htbase migrate`` adds the record
that ``FIRST_ADMIN_KEY_RECORD`` holds, so the cloud's first key never passes through its env.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, exists, inspect, select
from sqlalchemy.exc import DBAPIError

from htbase.config import KEY_RECORD, ConfigError
from infra.db import new_session
from infra.models import ApiKey, utcnow

SCOPES = ("read", "write", "admin")  # each grants what the ones before it do
# Anything else is refused before the ledger is asked (a header may carry NUL, which Postgres refuses).
KEY = re.compile(r"htb_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")


class KeyRequestError(ValueError):
    """A key cannot be made as asked (an unknown scope, an empty name)."""


@dataclass(frozen=True)
class KeyInfo:
    prefix: str
    name: str
    scope: str
    created_at: datetime
    revoked_at: datetime | None

    def grants(self, scope: str) -> bool:
        return SCOPES.index(self.scope) >= SCOPES.index(scope)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> tuple[str, str]:
    """A new key and its public record (``<prefix>:<sha256>``)."""
    prefix = secrets.token_hex(4)
    key = f"htb_{prefix}_{secrets.token_urlsafe(32)}"
    return key, f"{prefix}:{_hash(key)}"


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.prefix, row.name, row.scope, row.created_at, row.revoked_at)


class ApiKeys:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, scope: str) -> tuple[KeyInfo, str]:
        """A new key: its record and the key itself, which is shown once and never stored."""
        if scope not in SCOPES:
            raise KeyRequestError(f"unknown scope {scope!r}; one of {', '.join(SCOPES)}")
        if not name.strip() or len(name) > 200:
            raise KeyRequestError("a key's name is 1 to 200 characters")
        key, record = new_key()
        info = self._add(record, name.strip(), scope)
        if info is None:  # 32 random bits of prefix: a clash is all but impossible
            raise KeyRequestError("a key with the new key's prefix exists: make it again")
        return info, key

    def add_record(self, record: str, name: str, scope: str) -> KeyInfo | None:
        """Add the key that ``record`` describes, unless a key with its prefix exists (None then):
        running it again changes nothing."""
        if KEY_RECORD.fullmatch(record) is None:
            raise KeyRequestError("a key's record is <prefix>:<sha256>, as `htbase keys new` prints it")
        return self._add(record, name, scope)

    def _add(self, record: str, name: str, scope: str) -> KeyInfo | None:
        prefix, key_hash = record.split(":")
        with new_session(self.engine) as s, s.begin():
            if s.get(ApiKey, prefix) is not None:
                return None
            row = ApiKey(prefix=prefix, name=name, scope=scope, key_hash=key_hash, created_at=utcnow())
            s.add(row)
            s.flush()
            return _info(row)

    def list(self) -> list[KeyInfo]:
        with new_session(self.engine) as s:
            return [_info(row) for row in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def revoke(self, prefix: str) -> KeyInfo | None:
        """Revoke the live key ``prefix``; None if there is none."""
        with new_session(self.engine) as s, s.begin():
            row = s.scalar(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None)))
            if row is None:
                return None
            row.revoked_at = utcnow()
            s.flush()
            return _info(row)

    def find(self, key: str) -> KeyInfo | None:
        """The live key this is, or None (unknown, malformed or revoked)."""
        match = KEY.fullmatch(key)
        if match is None:
            return None
        with new_session(self.engine) as s:
            row = s.get(ApiKey, match[1])
            if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, _hash(key)):
                return None
            return _info(row)

    def any_made(self) -> bool:
        """Whether a key was ever made (revoked or not). ``ConfigError`` if the ledger has no keys
        table: the API was started on a schema nobody migrated."""
        try:
            with self.engine.connect() as connection:  # asked on every request of an open API: no ORM session
                return bool(connection.scalar(select(exists().select_from(ApiKey))))
        except DBAPIError:
            if inspect(self.engine).has_table(ApiKey.__tablename__):
                raise
            raise ConfigError(
                f"the ledger has no {ApiKey.__tablename__} table: its schema was never migrated. Run the "
                "migrate job first (`htbase migrate`; on Cloud Run: `gcloud run jobs execute htbase-migrate --wait`)"
            ) from None
