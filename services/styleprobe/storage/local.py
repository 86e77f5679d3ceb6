"""The artifact store over a local directory: the embedded mode's MinIO.

Each object is a file under the root; its content type lies beside it in a sidecar
``<key>.meta.json``. Writes go to a temporary file in the same folder and are moved into
place with :func:`os.replace`, so a reader sees a whole object or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from styleprobe.storage.base import (
    DEFAULT_CONTENT_TYPE,
    META_SUFFIX,
    TEMP_PREFIX,
    ObjectNotFound,
    StoreError,
    validate_key,
)


class LocalStore:
    """An :class:`~styleprobe.storage.base.ArtifactStore` rooted at a directory."""

    dependency = ""  # no server

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def presigned_url(self, key: str) -> str:
        """"": a local folder gives no URLs (its files are read by path)."""
        validate_key(key)
        return ""

    def check(self) -> None:
        """Nothing to reach: a local folder is created as objects are written."""

    def path(self, key: str) -> Path:
        """The file that holds ``key``."""
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> None:
        target = self.path(key)
        if target.is_dir():
            raise StoreError(f"cannot store {key!r}: a folder of objects has that name")
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(_meta_path(target), json.dumps({"content_type": content_type}).encode())
        _write_atomic(target, bytes(data))

    def get(self, key: str) -> bytes:
        target = self.path(key)
        try:
            return target.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        keys = []
        for dirpath, _, filenames in os.walk(self.root):
            folder = Path(dirpath).relative_to(self.root)
            for name in filenames:
                if name.endswith(META_SUFFIX) or name.startswith(TEMP_PREFIX):
                    continue
                key = (folder / name).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def content_type(self, key: str) -> str:
        target = self.path(key)
        if not target.is_file():
            raise ObjectNotFound(key)
        try:
            return json.loads(_meta_path(target).read_text())["content_type"]
        except (FileNotFoundError, KeyError, json.JSONDecodeError):
            return DEFAULT_CONTENT_TYPE

    def delete(self, key: str) -> None:
        target = self.path(key)
        if not target.is_file():
            raise ObjectNotFound(key)
        target.unlink()
        _meta_path(target).unlink(missing_ok=True)
        _remove_empty_parents(target.parent, self.root)


def _meta_path(target: Path) -> Path:
    return target.with_name(target.name + META_SUFFIX)


def _write_atomic(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and folder.is_relative_to(root):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
