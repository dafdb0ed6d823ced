"""Where artifact files live: local files or GCS, behind one small interface.

Keys are ``{task_id}/{archiver}.{ext}`` and written once: putting a key that
already exists returns the stored object instead of overwriting it, so a
redelivered capture never clobbers a finished one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ObjectNotFound(KeyError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    uri: str
    size: int
    sha256: str
    content_type: str


class FileStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...
