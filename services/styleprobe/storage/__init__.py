"""Artifact stores: bytes by key (see :mod:`styleprobe.storage.base`)."""

from __future__ import annotations

from pathlib import Path

from styleprobe.config import Settings
from styleprobe.outages import OutageListener
from styleprobe.storage.base import ArtifactStore, ObjectNotFound, StoreError, validate_key

__all__ = ["ArtifactStore", "ObjectNotFound", "StoreError", "open_store", "validate_key"]


def open_store(settings: Settings, root: Path | str | None = None,
               check: bool = True, listener: OutageListener | None = None) -> ArtifactStore:
    """The store that ``settings.store`` names; ``root`` overrides ``settings.store_dir``;
    ``check`` False: a remote store's server is not contacted when it opens. With a
    ``listener`` (a worker's), a remote store's calls wait out an outage for
    ``settings.s3_retry_s`` and tell it; without, they fail at once."""
    if settings.store == "local":
        from styleprobe.storage.local import LocalStore

        return LocalStore(root if root is not None else settings.store_dir)
    if settings.store == "s3":
        from styleprobe.storage.s3 import S3Store

        store = S3Store.from_settings(settings, check=check)
        return store if listener is None else store.wait_out_outages(settings.s3_retry_s,
                                                                     listener)
    raise StoreError(f"unknown artifact store {settings.store!r} (STYLEPROBE_STORE); "
                     "this build supports: local, s3")
