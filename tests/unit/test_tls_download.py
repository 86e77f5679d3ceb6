"""Presigned-URL downloads of the command line trust ``--ca`` besides the system's roots:
a real HTTPS server (in this process) with a certificate from a CA made in the test."""

from __future__ import annotations

import argparse
import http.server
import ssl
import threading
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

from styleprobe.cli.remote import download
from styleprobe.testing.certs import TestCA

BODY = b"a strip of frames"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_url(tmp_path: Path) -> Iterator[tuple[str, TestCA]]:
    ca = TestCA(tmp_path, "s3")
    issued = ca.issue("object-store")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert, issued.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/jobs/strip.png?X-Amz=1", ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_downloads_trust_the_ca_option(https_url: tuple[str, TestCA], tmp_path: Path) -> None:
    url, ca = https_url
    assert download(url, argparse.Namespace(ca=str(ca.cert)), 10) == BODY
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        download(url, argparse.Namespace(ca=""), 10)  # the system's roots only
    other = TestCA(tmp_path / "other", "other")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        download(url, argparse.Namespace(ca=str(other.cert)), 10)
