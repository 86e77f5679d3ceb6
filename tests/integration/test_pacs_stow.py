"""The gateway's STOW-RS endpoint, called by dicomweb-client: instances stored with the
bearer token join the series buffer as C-STORE's do; a wrong token is refused with 401
and stores nothing; a part that is no DICOM is a failure in the store response."""

from __future__ import annotations

from collections.abc import Iterator

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from styleprobe.config import Settings
from styleprobe.gateway.server import Gateway
from styleprobe.testing.ports import free_port

TOKEN = "stow-token"


@pytest.fixture
def gateway() -> Iterator[tuple[Gateway, str]]:
    port = free_port()
    instance = Gateway(Settings(
        gateway_listen=f"127.0.0.1:{free_port()}", gateway_series_timeout_s=600,
        gateway_dicomweb_listen=f"127.0.0.1:{port}", gateway_dicomweb_token=TOKEN))
    instance.start()
    yield instance, f"http://127.0.0.1:{port}"
    instance.close()


def sources() -> list[pydicom.Dataset]:
    return [pydicom.dcmread(get_testdata_file(name) or "")
            for name in ("CT_small.dcm", "MR_small.dcm")]


def test_instances_stored_by_stow_rs_join_the_series_buffer(
        gateway: tuple[Gateway, str]) -> None:
    instance, url = gateway
    client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {TOKEN}"})
    answer = client.store_instances(sources())
    stored = [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence]
    assert stored == [str(ds.SOPInstanceUID) for ds in sources()]
    assert instance.buffer.pending() == 2


def test_a_wrong_token_is_refused(gateway: tuple[Gateway, str]) -> None:
    instance, url = gateway
    client = DICOMwebClient(url=url, headers={"Authorization": "Bearer guess"})
    with pytest.raises(requests.HTTPError) as refused:
        client.store_instances(sources())
    assert refused.value.response.status_code == 401
    assert instance.buffer.pending() == 0


def test_a_part_that_is_no_dicom_is_a_failure(gateway: tuple[Gateway, str]) -> None:
    instance, url = gateway
    body = (b"--b\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--b--\r\n")
    answer = requests.post(f"{url}/studies", data=body, timeout=10, headers={
        "Authorization": f"Bearer {TOKEN}",
        "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'})
    assert answer.status_code == 409
    assert "00081198" in answer.json() and instance.buffer.pending() == 0


def test_a_gateway_never_started_closes() -> None:
    instance = Gateway(Settings(gateway_listen=f"127.0.0.1:{free_port()}",
                                gateway_dicomweb_listen=f"127.0.0.1:{free_port()}",
                                gateway_dicomweb_token=TOKEN))
    instance.close()  # returns (shutting down a server that never served would wait)


def test_the_endpoint_needs_a_token() -> None:
    with pytest.raises(ValueError, match="DICOMWEB_TOKEN"):
        Gateway(Settings(gateway_listen=f"127.0.0.1:{free_port()}",
                         gateway_dicomweb_listen=f"127.0.0.1:{free_port()}"))
