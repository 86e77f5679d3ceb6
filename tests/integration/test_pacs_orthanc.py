"""The gateway's sending side against a real Orthanc (with its DICOMweb plugin): result
objects stored by C-STORE and by STOW-RS are found by QIDO-RS in the source's study and
read back by WADO-RS; a refused association is a SendError."""

from __future__ import annotations

import io
from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

import required
from styleprobe.api import pb
from styleprobe.gateway.results import build_results
from styleprobe.gateway.send import Destination, SendError, c_store, stow
from styleprobe.testing.orthanc import Orthanc, orthanc_server


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    required.program("Orthanc")
    process, server = orthanc_server(tmp_path_factory.mktemp("orthanc"))
    process.start(timeout_s=60)
    yield server
    process.stop()


def results(name: str) -> tuple[pydicom.Dataset, list[pydicom.Dataset]]:
    source = pydicom.dcmread(get_testdata_file(name))
    explanation = pb.Explanation(
        lambdas=[-1, 0, 1], flip=pb.Flip(found=True, at_lambda=0.9),
        quality=pb.ReconstructionQuality(unreliable=True, reasons=["x"], out_of_domain=True,
                                         reason_codes=[pb.RELIABILITY_REASON_OUT_OF_DOMAIN]),
        models={"classifier": "knee-oa-classifier/1"})
    job = pb.Job(job_id=f"job-of-{name}", model_set="knee-oa", target="OA",
                 explanation=explanation)
    frames = [np.full((32, 32), 60 * i, np.uint8) for i in range(3)]
    maps = [np.full((32, 32, 3), 9 * i, np.uint8) for i in range(3)]
    return source, build_results(source, job, frames, maps)


def stored(orthanc: Orthanc, source: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    found = {}
    for series in client.search_for_series(str(source.StudyInstanceUID)):
        uid = series["0020000E"]["Value"][0]
        for ds in client.retrieve_series(str(source.StudyInstanceUID), uid):
            found[str(ds.SOPInstanceUID)] = ds
    return found


@pytest.mark.parametrize(("name", "how"), [("CT_small.dcm", "c-store"),
                                           ("MR_small.dcm", "stow-rs")])
def test_results_reach_the_pacs(orthanc: Orthanc, name: str, how: str) -> None:
    source, objects = results(name)
    if how == "c-store":
        c_store(objects, Destination(orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),
                "STYLEPROBE")
    else:
        stow(objects, orthanc.dicomweb_url)
    found = stored(orthanc, source)
    assert set(found) == {str(ds.SOPInstanceUID) for ds in objects}
    report = next(ds for ds in found.values() if ds.Modality == "SR")
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    assert isinstance(hd.sr.srread(io.BytesIO(buffer.getvalue())), hd.sr.ComprehensiveSR)
    assert all(ds.PatientID == source.PatientID for ds in found.values())


def test_a_refused_association_is_a_send_error(orthanc: Orthanc) -> None:
    _, objects = results("CT_small.dcm")
    with pytest.raises(SendError, match="no association"):
        c_store(objects, Destination("NOT-ORTHANC", "127.0.0.1", orthanc.dicom_port),
                "STYLEPROBE")
