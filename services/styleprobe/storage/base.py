"""The artifact-store seam: bytes by key, with a content type.

Implementations: :mod:`styleprobe.storage.local` (a directory) and
:mod:`styleprobe.storage.s3` (S3 / MinIO). Writes are atomic: a reader sees the whole
object or none. Keys are ``/``-separated, relative, without ``..``. Listings with sizes
and times of last write (:class:`ObjectInfo`) let the retention reaper
(:mod:`styleprobe.reaper`) find old objects; :meth:`ArtifactStore.read_chunks` streams an
object without holding it whole.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

META_SUFFIX = ".meta.json"  # reserved: the local store's content-type sidecars
TEMP_PREFIX = ".tmp-"  # reserved: the local store's files being written
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class StoreError(RuntimeError):
    """A store operation failed."""


class ObjectNotFound(StoreError, KeyError):  # noqa: N818 (reads as a condition)
    """No object under that key."""


MAX_KEY_BYTES, MAX_PART_BYTES = 1024, 255
CHUNK_BYTES = 1 << 20  # default size of a streamed chunk (1 MiB)


@dataclass(frozen=True)
class ObjectInfo:
    """An object's key, its size in bytes and when it was last written (Unix seconds)."""

    key: str
    size: int
    modified: float


def validate_key(key: str) -> str:
    """Return ``key`` if it is a relative ``/``-separated key without ``..`` or control
    characters, of a length S3 and a file system both take; else raise."""
    if not isinstance(key, str) or not key:
        raise StoreError("an object key must be a non-empty string")
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid object key {key!r}: keys are relative, '/'-separated, "
                         "without empty, '.' or '..' parts")
    if key.endswith(META_SUFFIX) or any(p.startswith(TEMP_PREFIX) for p in parts):
        raise StoreError(f"invalid object key {key!r}: reserved name")
    if any(ord(c) < 32 or c == "\x7f" for c in key):
        raise StoreError(f"invalid object key {key!r}: control characters")
    if len(key.encode()) > MAX_KEY_BYTES or any(len(p.encode()) > MAX_PART_BYTES for p in parts):
        raise StoreError(f"invalid object key {key[:40]!r}...: at most {MAX_KEY_BYTES} bytes "
                         f"(S3's limit), {MAX_PART_BYTES} between slashes (a file name's)")
    return key


class ArtifactStore(Protocol):
    """Bytes by key."""

    # The server this store depends on, as health checks and metrics name it ("s3"), or
    # "" for a store that needs none (a local directory).
    dependency: str

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` atomically (replacing any earlier object)."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`ObjectNotFound` if there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """The objects under ``prefix`` with their sizes and times, sorted by key."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size and time of ``key``; :class:`ObjectNotFound` if there is none."""
        ...

    def read_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes under ``key`` in pieces of at most ``chunk_bytes``, read as they are
        consumed; :class:`ObjectNotFound` (from the first piece) if there are none."""
        ...

    def content_type(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete every key of ``keys`` in as few requests as the store allows; a key
        that is not there is no error."""
        ...

    def presigned_url(self, key: str) -> str:
        """A URL that fetches ``key`` without credentials for a while; "" where the store
        has no URLs to give (a local directory)."""
        ...

    def check(self) -> None:
        """Raise :class:`StoreError` unless the store can be used now (its server answers
        and its bucket exists)."""
        ...
