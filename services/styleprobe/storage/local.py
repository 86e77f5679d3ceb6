"""The artifact store over a local directory: the embedded mode's MinIO.

Each object is a file under the root; its content type lies beside it in a sidecar
``<key>.meta.json``. Writes go to a temporary file in the same folder and are moved into
place with :func:`os.replace`, so a reader sees a whole object or none. An object's time
of last write is its file's modification time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from styleprobe.storage.base import (
    CHUNK_BYTES,
    DEFAULT_CONTENT_TYPE,
    META_SUFFIX,
    TEMP_PREFIX,
    ObjectInfo,
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

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        infos = []
        for key, path in self._files(prefix):
            try:
                infos.append(_info(key, path))
            except FileNotFoundError:  # deleted meanwhile
                continue
        return sorted(infos, key=lambda info: info.key)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(key for key, _ in self._files(prefix))

    def stat(self, key: str) -> ObjectInfo:
        target = self.path(key)
        if not target.is_file():
            raise ObjectNotFound(key)
        try:
            return _info(key, target)
        except FileNotFoundError as exc:
            raise ObjectNotFound(key) from exc

    def read_chunks(self, key: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        target = self.path(key)
        try:
            fh = target.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise ObjectNotFound(key) from exc
        with fh:
            while chunk := fh.read(chunk_bytes):
                yield chunk

    def _files(self, prefix: str) -> Iterator[tuple[str, Path]]:
        """Each object's key under ``prefix`` and its file, in no order."""
        if not self.root.is_dir():
            return
        for dirpath, _, filenames in os.walk(self.root):
            folder = Path(dirpath).relative_to(self.root)
            for name in filenames:
                if name.endswith(META_SUFFIX) or name.startswith(TEMP_PREFIX):
                    continue
                key = (folder / name).as_posix()
                if key.startswith(prefix):
                    yield key, Path(dirpath) / name

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

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            with contextlib.suppress(ObjectNotFound):
                self.delete(key)


def _info(key: str, path: Path) -> ObjectInfo:
    status = path.stat()
    return ObjectInfo(key=key, size=status.st_size, modified=status.st_mtime)


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
