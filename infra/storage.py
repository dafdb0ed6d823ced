"""Where artifact files live: local files or GCS, behind one small interface.

Keys are ``{task_id}/{archiver}.{ext}`` and written once: putting a key that
already exists returns the stored object instead of overwriting it, so a
redelivered capture never clobbers a finished one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import google.cloud.storage as storage
from google.api_core.exceptions import NotFound, PreconditionFailed
from google.auth.credentials import AnonymousCredentials, Signing
from google.auth.exceptions import GoogleAuthError
from google.cloud.storage.retry import DEFAULT_RETRY

from htbase.config import Settings
from htbase.logs import log
from infra import identity
from infra.telemetry import traced

logger = logging.getLogger("htbase.storage")

# Formats that shrink well; stored gzip-compressed on GCS.
COMPRESSIBLE_TYPES = frozenset({"text/html", "text/plain", "text/css", "application/json", "image/svg+xml"})
# How much of an object a streaming read fetches at once from GCS.
STREAM_CHUNK_BYTES = 1024 * 1024
DELETE_TIMEOUT_S = 5.0


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

    def open(self, key: str) -> io.BufferedIOBase:
        """The object's bytes as a file read in chunks, so that serving a large
        artifact never holds it in memory; close it when done."""

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with ``prefix`` (a task's ``{task_id}/``); how many went.
        Removing what is not there is no error."""

    def signed_url(self, key: str, expires_s: int) -> str | None:
        """A time-limited GET URL for the object, or None when the store cannot
        issue one (the caller then streams the bytes itself)."""


def check_key(key: str) -> str:
    """Keys are relative POSIX paths without ``..``: the same key must name the
    same object in every store, and no key may escape a local root."""
    # An empty part also catches "", "/abs" and "a//b".
    if "\\" in key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalFileStore:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _stored(self, key: str, path: Path, data: bytes, content_type: str) -> StoredObject:
        return StoredObject(key, path.as_uri(), len(data), _sha256(data), content_type)

    @traced("storage put")
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a private temp file, make it durable, then hard-link it into
        # place: link() fails if the name exists, so the first complete file
        # wins and readers never see a partial one.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; artifacts are ordinary files
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                # Same key means same archiver and format, so the caller's
                # content type describes the existing file too.
                return self._stored(key, path, path.read_bytes(), content_type)
            _fsync_dir(path.parent)
        finally:
            os.unlink(tmp)
        return self._stored(key, path, data, content_type)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> io.BufferedIOBase:
        try:
            return self._path(key).open("rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete_prefix(self, prefix: str) -> int:
        directory = self._path(prefix.rstrip("/"))
        if not directory.is_dir():
            return 0
        removed = sum(1 for path in directory.rglob("*") if path.is_file())
        shutil.rmtree(directory)
        return removed

    def signed_url(self, key: str, expires_s: int) -> str | None:
        return None


def _fsync_dir(directory: Path) -> None:
    # The new directory entry must survive a crash too, not just the file data.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class GcsFileStore:
    """``signer``: the service account whose signature IAM's signBlob puts on download URLs
    (Cloud Run holds no key); credentials that hold a key sign by themselves."""

    def __init__(self, bucket: str, client: storage.Client, signer: str = ""):
        self.bucket = client.bucket(bucket)
        # The client keeps its credentials in _credentials.
        self._can_sign = isinstance(client._credentials, Signing)
        self._signer = signer

    def _uri(self, key: str) -> str:
        return f"gs://{self.bucket.name}/{key}"

    @traced("storage put")
    def put(self, key: str, data: bytes, content_type: str) -> StoredObject:
        blob = self.bucket.blob(check_key(key))
        digest = _sha256(data)
        # Metadata keeps the facts about the original bytes, which a compressed
        # object's own size and hashes no longer describe.
        blob.metadata = {"sha256": digest, "size": str(len(data))}
        payload = data
        if content_type.split(";")[0].strip().lower() in COMPRESSIBLE_TYPES:
            blob.content_encoding = "gzip"
            payload = gzip.compress(data, compresslevel=6, mtime=0)  # 9 is slow on big pages for little gain
        try:
            # Generation 0 means "only if absent": create-once, enforced by GCS.
            blob.upload_from_string(payload, content_type=content_type, if_generation_match=0)
        except PreconditionFailed:
            return self._existing(key)
        return StoredObject(key, self._uri(key), len(data), digest, content_type)

    def _existing(self, key: str) -> StoredObject:
        blob = self.bucket.get_blob(key)
        if blob is None:
            raise ObjectNotFound(key)
        meta = blob.metadata or {}
        if "sha256" in meta and "size" in meta:
            return StoredObject(key, self._uri(key), int(meta["size"]), meta["sha256"], blob.content_type)
        data = self.get(key)  # written by something else: describe it from its bytes
        return StoredObject(key, self._uri(key), len(data), _sha256(data), blob.content_type)

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def open(self, key: str) -> io.BufferedIOBase:
        blob = self.bucket.get_blob(check_key(key))  # its metadata says whether the bytes are gzipped
        if blob is None:
            raise ObjectNotFound(key)
        # Raw download returns the stored bytes on both GCS and the emulator
        # (decompressive transcoding differs between them): gunzip here when needed.
        # The reader fetches one ranged chunk per read, pinned to this generation.
        reader = blob.open("rb", chunk_size=STREAM_CHUNK_BYTES, raw_download=True, if_generation_match=blob.generation)
        return gzip.GzipFile(fileobj=reader) if blob.content_encoding == "gzip" else reader

    def exists(self, key: str) -> bool:
        return self.bucket.blob(check_key(key)).exists()

    def delete_prefix(self, prefix: str) -> int:
        check_key(prefix.rstrip("/"))
        removed = 0
        # Bounded: a removal that fails is retried later, so an outage must not hold the caller for
        # the client's default two minutes of retries.
        calls = {"retry": DEFAULT_RETRY.with_timeout(DELETE_TIMEOUT_S), "timeout": DELETE_TIMEOUT_S}
        for blob in self.bucket.client.list_blobs(self.bucket, prefix=prefix, **calls):
            with suppress(NotFound):  # removed meanwhile: gone all the same
                blob.delete(**calls)
                removed += 1
        return removed

    def signed_url(self, key: str, expires_s: int) -> str | None:
        blob = self.bucket.blob(check_key(key))
        expiration = timedelta(seconds=expires_s)
        if self._can_sign:
            return blob.generate_signed_url(version="v4", expiration=expiration, method="GET")
        if not self._signer:
            return None
        try:
            # IAM signs for the signer; the process's own token says who asks (it needs
            # roles/iam.serviceAccountTokenCreator on the signer).
            return blob.generate_signed_url(
                version="v4",
                expiration=expiration,
                method="GET",
                service_account_email=self._signer,
                access_token=identity.credentials().token,
            )
        except GoogleAuthError as exc:  # the caller streams the bytes instead
            log(
                logger,
                logging.WARNING,
                "signing a download URL through IAM failed",
                signer=self._signer,
                error=str(exc),
            )
            return None


def gcs_client(settings: Settings) -> storage.Client:
    """A storage client from settings alone (never from the process env)."""
    if settings.storage_emulator_host:
        host = settings.storage_emulator_host
        endpoint = host if "://" in host else f"http://{host}"
        return storage.Client(
            project=settings.google_cloud_project or None,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": endpoint},
        )
    # Default credentials; the project is inferred from them when not set.
    project = {"project": settings.google_cloud_project} if settings.google_cloud_project else {}
    return storage.Client(**project)


def make_file_store(settings: Settings) -> FileStore:
    if settings.file_storage_provider == "gcs":
        return GcsFileStore(settings.gcs_bucket, gcs_client(settings), signer=settings.signed_url_service_account)
    return LocalFileStore(settings.local_storage_path)
