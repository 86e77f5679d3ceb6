"""Triton over TLS with a configurable CA bundle (issue 18). A real tritonserver (empty
repository) whose gRPC port speaks TLS with a certificate from a CA made in the test: the
client the orchestrator and workers build (``STYLEPROBE_TRITON_TLS``,
``STYLEPROBE_TLS_CA_BUNDLE``) reaches it with the right CA and not with another one."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.utils import InferenceServerException

import required
from styleprobe.backends.triton import triton_client
from styleprobe.config import Settings
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.certs import TestCA
from styleprobe.testing.ports import free_port
from styleprobe.tls import triton_tls


def test_triton_over_tls_checks_the_ca(tmp_path: Path) -> None:
    required.package("pytriton")
    ca, other = TestCA(tmp_path, "triton"), TestCA(tmp_path, "other")
    issued = ca.issue("tritonserver")
    (tmp_path / "repository").mkdir()
    server = TritonProcess(tmp_path / "repository", free_port(), free_port(), free_port(),
                           tmp_path / "tritonserver.log",
                           grpc_tls=(issued.cert, issued.key, ca.cert))
    with server:
        right = Settings(triton_tls=True, tls_ca_bundle=str(ca.cert))
        client = triton_client(server.grpc_url, **triton_tls(right))
        try:
            assert client.is_server_live(client_timeout=10)
        finally:
            client.close()
        wrong = Settings(triton_tls=True, tls_ca_bundle=str(other.cert))
        client = triton_client(server.grpc_url, **triton_tls(wrong))
        try:
            with pytest.raises(InferenceServerException):
                client.is_server_live(client_timeout=3)
        finally:
            client.close()
        plain = triton_client(server.grpc_url, **triton_tls(Settings()))
        try:
            with pytest.raises(InferenceServerException):
                plain.is_server_live(client_timeout=3)
        finally:
            plain.close()
