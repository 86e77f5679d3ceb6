"""The S3 artifact store against a real S3 server (SeaweedFS, signed requests)."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import required
from styleprobe.config import Settings
from styleprobe.storage import ObjectNotFound, StoreError, open_store
from styleprobe.testing.process import ServerProcess
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server

SECRET = "integration-secret"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    required.program("weed")
    server, endpoint = s3_server(tmp_path_factory.mktemp("s3"), SECRET)
    server.start(timeout_s=90)
    yield server, endpoint
    server.stop()


def settings(endpoint: str, bucket: str, **overrides: str) -> Settings:
    env = {"STYLEPROBE_STORE": "s3", "STYLEPROBE_S3_ENDPOINT": endpoint,
           "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY, "STYLEPROBE_S3_SECRET_KEY": SECRET,
           "STYLEPROBE_S3_BUCKET": bucket, "STYLEPROBE_PRESIGN_EXPIRY_S": "120", **overrides}
    return Settings.from_env(env)


def test_objects_round_trip_with_their_content_types(s3: tuple[ServerProcess, str]) -> None:
    store = open_store(settings(s3[1], "roundtrip"))
    assert store.dependency == "s3"  # STYLEPROBE_STORE=s3 opens the S3 store
    store.put("jobs/j1/manifest.json", b'{"a": 1}', "application/json")
    store.put("jobs/j1/frames/frame_000.png", b"\x89PNG...", "image/png")
    store.put("directions/abc.json", b"{}", "application/json")
    assert store.get("jobs/j1/manifest.json") == b'{"a": 1}'
    assert store.content_type("jobs/j1/frames/frame_000.png") == "image/png"
    assert store.list("jobs/j1/") == ["jobs/j1/frames/frame_000.png", "jobs/j1/manifest.json"]
    assert store.list() == ["directions/abc.json", *store.list("jobs/")]
    store.put("jobs/j1/manifest.json", b"{}", "application/json")  # replaced whole
    assert store.get("jobs/j1/manifest.json") == b"{}"
    store.delete("jobs/j1/manifest.json")
    assert not store.exists("jobs/j1/manifest.json")
    with pytest.raises(ObjectNotFound):
        store.get("jobs/j1/manifest.json")
    with pytest.raises(ObjectNotFound):
        store.delete("jobs/j1/manifest.json")


def test_bad_keys_are_refused(s3: tuple[ServerProcess, str]) -> None:
    store = open_store(settings(s3[1], "keys"))
    for key in ("/abs", "a/../b", "a//b"):
        with pytest.raises(StoreError, match="invalid object key"):
            store.put(key, b"x")


def test_presigned_urls_download_without_credentials(s3: tuple[ServerProcess, str]) -> None:
    store = open_store(settings(s3[1], "presign"))
    store.put("jobs/j2/traversal.gif", b"GIF89a...", "image/gif")
    url = store.presigned_url("jobs/j2/traversal.gif")
    assert "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"GIF89a..."
        assert response.headers["Content-Type"] == "image/gif"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(url.split("?")[0], timeout=10)  # unsigned: refused


def test_the_bucket_is_created_once_by_whoever_opens_first(
        s3: tuple[ServerProcess, str]) -> None:
    first = open_store(settings(s3[1], "fresh-bucket"))
    second = open_store(settings(s3[1], "fresh-bucket"))
    first.put("inputs/x.png", b"x", "image/png")
    assert second.list("inputs/") == ["inputs/x.png"]


def test_wrong_credentials_and_a_dead_server_are_clear_errors(
        s3: tuple[ServerProcess, str]) -> None:
    with pytest.raises(StoreError, match=r"AccessDenied|SignatureDoesNotMatch|InvalidAccessKey"):
        open_store(settings(s3[1], "denied", STYLEPROBE_S3_SECRET_KEY="wrong"))
    with pytest.raises(StoreError, match=r"127\.0\.0\.1:9"):
        open_store(settings("127.0.0.1:9", "nobody"))


def test_secrets_can_come_from_files(s3: tuple[ServerProcess, str], tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    env = {"STYLEPROBE_STORE": "s3", "STYLEPROBE_S3_ENDPOINT": s3[1],
           "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY,
           "STYLEPROBE_S3_SECRET_KEY_FILE": str(secret), "STYLEPROBE_S3_BUCKET": "from-file"}
    open_store(Settings.from_env(env)).put("inputs/y.png", b"y", "image/png")
    with pytest.raises(ValueError, match="cannot be read"):
        Settings.from_env({"STYLEPROBE_S3_SECRET_KEY_FILE": str(tmp_path / "missing")})
