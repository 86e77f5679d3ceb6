"""The local-directory artifact store."""

from __future__ import annotations

from pathlib import Path

import pytest

from styleprobe.config import Settings
from styleprobe.storage import ObjectNotFound, StoreError, open_store
from styleprobe.storage.local import LocalStore


def test_put_get_list_delete(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert store.list() == []
    store.put("jobs/a/report.html", b"<html>", "text/html")
    store.put("jobs/a/frames/0.png", b"png", "image/png")
    store.put("directions/x.json", b"{}")
    assert store.get("jobs/a/report.html") == b"<html>"
    assert store.content_type("jobs/a/report.html") == "text/html"
    assert store.content_type("directions/x.json") == "application/octet-stream"
    assert store.list() == ["directions/x.json", "jobs/a/frames/0.png", "jobs/a/report.html"]
    assert store.list("jobs/a/f") == ["jobs/a/frames/0.png"]
    store.put("jobs/a/report.html", b"new", "text/html")
    assert store.get("jobs/a/report.html") == b"new"
    store.delete("jobs/a/frames/0.png")
    assert not store.exists("jobs/a/frames/0.png")
    assert not (tmp_path / "store/jobs/a/frames").exists()
    with pytest.raises(ObjectNotFound):
        store.get("jobs/a/frames/0.png")
    with pytest.raises(ObjectNotFound):
        store.delete("nothing")


def test_no_temporary_or_sidecar_files_are_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("a/b.bin", b"1")
    (tmp_path / "a" / ".tmp-leftover").write_bytes(b"partial")
    assert store.list() == ["a/b.bin"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        ".tmp-leftover", "b.bin", "b.bin.meta.json"]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "a\\b",
                                 "x.meta.json", "a/.tmp-1"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(StoreError):
        store.put(key, b"x")
    assert list(tmp_path.iterdir()) == []


def test_open_store_by_settings(tmp_path: Path) -> None:
    store = open_store(Settings(store_dir=str(tmp_path)))
    store.put("k", b"v")
    assert (tmp_path / "k").read_bytes() == b"v"
    with pytest.raises(StoreError, match="unknown artifact store"):
        open_store(Settings(store="ftp"))
