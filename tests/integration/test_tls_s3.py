"""S3 over HTTPS verifies the server's certificate against STYLEPROBE_TLS_CA_BUNDLE (issue
18: a private CA could not be added). A real S3 server (SeaweedFS) speaking only HTTPS with
a certificate from a CA made in the test: the store works with that CA, and refuses the
server when it trusts another CA or only the system's roots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import required
from styleprobe.config import Settings
from styleprobe.storage import StoreError
from styleprobe.storage.s3 import S3Store
from styleprobe.testing.certs import TestCA
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server

SECRET = "tls-s3-secret"


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestCA]:
    folder = tmp_path_factory.mktemp("certs")
    return {"s3": TestCA(folder, "s3"), "other": TestCA(folder, "other")}


@pytest.fixture(scope="module")
def https_s3(cas: dict[str, TestCA], tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[str]:
    required.program("weed")
    issued = cas["s3"].issue("seaweedfs")
    server, endpoint = s3_server(tmp_path_factory.mktemp("s3"), SECRET,
                                 tls=(issued.cert, issued.key, cas["s3"].cert))
    server.start(timeout_s=90)
    try:
        yield endpoint
    finally:
        server.stop()


def store(endpoint: str, bundle: Path | None) -> S3Store:
    settings = Settings(store="s3", s3_endpoint=endpoint, s3_access_key=S3_ACCESS_KEY,
                        s3_secret_key=SECRET, s3_secure=True, s3_bucket="tls-check",
                        tls_ca_bundle=str(bundle) if bundle else "")
    return S3Store.from_settings(settings, check=False)


def test_s3_over_https_trusts_the_configured_ca_only(https_s3: str,
                                                     cas: dict[str, TestCA]) -> None:
    trusted = store(https_s3, cas["s3"].cert)
    trusted.ensure_bucket()
    trusted.put("inputs/tls.txt", b"over https")
    assert trusted.get("inputs/tls.txt") == b"over https"
    for bundle in (cas["other"].cert, None):  # another CA; the system's roots
        with pytest.raises(StoreError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify"):
            store(https_s3, bundle).ensure_bucket()
