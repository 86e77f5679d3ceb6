"""The artifact-store seam: bytes by key, with a content type.

Implementations: :mod:`styleprobe.storage.local` (a directory) and
:mod:`styleprobe.storage.s3` (S3 / MinIO). Writes are atomic: a reader sees the whole
object or none. Keys are ``/``-separated, relative, without ``..``.
"""

from __future__ import annotations

from typing import Protocol


class StoreError(RuntimeError):
    """A store operation failed."""


class ObjectNotFound(StoreError, KeyError):  # noqa: N818 (reads as a condition)
    """No object under that key."""


class ArtifactStore(Protocol):
    """Bytes by key."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store ``data`` under ``key`` atomically (replacing any earlier object)."""
        ...

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; :class:`ObjectNotFound` if there are none."""
        ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix``, sorted."""
        ...

    def content_type(self, key: str) -> str: ...

    def delete(self, key: str) -> None: ...
