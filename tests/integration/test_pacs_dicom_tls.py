"""DICOM TLS on the gateway: dcmtk's ``storescu`` stores into its TLS port with a client
certificate of the configured CA; a plain association, or TLS without a certificate, is
refused; results go to a TLS destination whose certificate is checked."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

import required
from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.gateway.dicom_tls import DicomTLSError, client_context, server_context
from styleprobe.gateway.results import build_results
from styleprobe.gateway.send import Destination, SendError, c_store
from styleprobe.gateway.server import Gateway
from styleprobe.testing.certs import Issued, TestCA
from styleprobe.testing.ports import free_port

AET = "STYLEPROBE"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestCA, Issued, Issued]:
    ca = TestCA(tmp_path_factory.mktemp("pki"), "hospital-ca")
    return ca, ca.issue("gateway"), ca.issue("modality", client=True)


@pytest.fixture
def gateway(pki: tuple[TestCA, Issued, Issued]) -> Iterator[tuple[Gateway, int]]:
    ca, server, _ = pki
    port = free_port()
    instance = Gateway(Settings(
        gateway_listen=f"127.0.0.1:{port}", gateway_series_timeout_s=600,
        gateway_dicom_tls_cert=str(server.cert), gateway_dicom_tls_key=str(server.key),
        gateway_dicom_tls_client_ca=str(ca.cert)))
    instance.start()
    yield instance, port
    instance.close()


def storescu(port: int, *tls: str) -> subprocess.CompletedProcess[str]:
    program = shutil.which("storescu") or "storescu"
    return subprocess.run([program, *tls, "-aec", AET, "127.0.0.1", str(port),
                           get_testdata_file("CT_small.dcm") or ""],
                          capture_output=True, text=True, timeout=60)


def test_storescu_stores_over_tls_with_a_client_certificate(
        gateway: tuple[Gateway, int], pki: tuple[TestCA, Issued, Issued]) -> None:
    required.program("storescu")
    instance, port = gateway
    ca, _, client = pki
    assert storescu(port).returncode != 0  # plain DICOM: refused
    anonymous = storescu(port, "+tla", "+cf", str(ca.cert))
    assert anonymous.returncode != 0  # TLS without a client certificate: refused
    assert instance.buffer.pending() == 0
    sent = storescu(port, "+tls", str(client.key), str(client.cert), "+cf", str(ca.cert))
    assert sent.returncode == 0, sent.stderr
    assert instance.buffer.pending() == 1


def test_results_go_to_a_tls_destination(gateway: tuple[Gateway, int],
                                         pki: tuple[TestCA, Issued, Issued]) -> None:
    instance, port = gateway
    ca, _, client = pki
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    job = pb.Job(job_id="tls", model_set="knee-oa", target="OA",
                 explanation=pb.Explanation(lambdas=[0.0]))
    results = build_results(source, job, [np.zeros((8, 8), np.uint8)],
                            [np.zeros((8, 8, 3), np.uint8)])
    context = client_context(Settings(
        gateway_destination_tls_ca=str(ca.cert), gateway_dicom_tls_cert=str(client.cert),
        gateway_dicom_tls_key=str(client.key)))
    c_store(results, Destination(AET, "127.0.0.1", port), "SENDER", context)
    assert instance.buffer.pending() == 2  # the SC and the SR series
    stranger = TestCA(Path(str(ca.folder)) / "other", "other-ca")
    with pytest.raises(SendError):  # a destination certificate of another CA
        c_store(results, Destination(AET, "127.0.0.1", port), "SENDER", client_context(
            Settings(gateway_destination_tls_ca=str(stranger.cert))))


def test_settings_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DicomTLSError, match="needs the gateway's own certificate"):
        server_context(Settings(gateway_dicom_tls_client_ca="ca.pem"))
    with pytest.raises(DicomTLSError, match="both"):
        server_context(Settings(gateway_dicom_tls_cert="cert.pem"))
    with pytest.raises(DicomTLSError, match="cannot be used"):
        server_context(Settings(gateway_dicom_tls_cert=str(tmp_path / "missing.pem"),
                                gateway_dicom_tls_key=str(tmp_path / "missing.key")))
    assert server_context(Settings()) is None and client_context(Settings()) is None
