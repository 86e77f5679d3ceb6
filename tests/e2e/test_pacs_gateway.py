"""The PACS round trip on real servers: dcmtk's ``storescu`` sends pydicom's CT_small and
MR_small and two knee phantoms written as DICOM (with a patient name and id) to the DICOM
gateway; the gateway calls the service (Redis, S3, orchestrator, a Celery worker) and
stores its results into a real Orthanc. A QIDO-RS query of each source study then finds
the Secondary Capture and Comprehensive SR series with the right UIDs and references,
readable by pydicom and highdicom; no patient name or id reached the orchestrator's or
the worker's logs or the bucket; the job is found again by its idempotency key
(ListJobs), with the source's DICOM reference echoed and, for CT and MR sent to the knee
set, out_of_domain with its coded reason in the SR.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import required
from styleprobe.api import pb, rpc
from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.data.datasets import phantom_set
from styleprobe.gateway.deidentify import idempotency_key
from styleprobe.modelset import list_model_sets
from styleprobe.testing.orthanc import Orthanc, orthanc_server
from styleprobe.testing.ports import free_port, port_open
from styleprobe.testing.process import ServerProcess, venv_program
from styleprobe.testing.stack import ServiceStack

KNEE = "knee-oa"
GATEWAY_AET, MODALITY_AET = "STYLEPROBE", "KNEEMODALITY"
PATIENT_NAME, PATIENT_ID = "Testpatient^Jane", "PID-7741"
DX_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
WAIT_S = 600.0

pytestmark = pytest.mark.skipif(KNEE not in list_model_sets(DEFAULT_MODEL_REPOSITORY),
                                reason="the bundled knee-oa set is not exported")


def knee_dicom(folder: Path, index: int, study: str, series: str) -> Path:
    """A knee phantom as a DX DICOM file of a patient with a name and an id."""
    image = phantom_set("knee", seed=3, size=64).sample(index).image[..., 0]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = DX_STORAGE
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber = "19600101", "F", "ACC-55"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20261205", "101500", "1"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "DX", "KNEE", "Knee AP"
    ds.SeriesNumber, ds.InstanceNumber = 1, index + 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.round(image * 4095).astype(np.uint16).tobytes()
    path = folder / f"knee-{index}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sources")
    study, series = generate_uid(), generate_uid()
    files = [Path(get_testdata_file(name)) for name in ("CT_small.dcm", "MR_small.dcm")]
    return [*files, *(knee_dicom(folder, index, study, series) for index in range(2))]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    for program in ("redis-server", "weed", "styleprobe"):
        required.program(program)
    with ServiceStack(tmp_path_factory.mktemp("pacs-stack"), DEFAULT_MODEL_REPOSITORY,
                      workers=1, extra_env={"STYLEPROBE_PROBE_SAMPLES": "400"}) as services:
        yield services


@pytest.fixture(scope="module")
def pacs(stack: ServiceStack) -> Iterator[tuple[Orthanc, ServerProcess, int]]:
    """Orthanc, and the gateway sending its results there (Orthanc knows the gateway)."""
    for program in ("Orthanc", "storescu"):
        required.program(program)
    workdir = stack.workdir
    gateway_port = free_port()
    orthanc_process, orthanc = orthanc_server(
        workdir, modalities={"styleprobe": (GATEWAY_AET, "127.0.0.1", gateway_port)})
    orthanc_process.start(timeout_s=60)
    routes = [{"calling_ae": MODALITY_AET, "model_set": KNEE, "lambdas": "-3:3:5"}]
    env = {**stack.env, "STYLEPROBE_GATEWAY_AE_TITLE": GATEWAY_AET,
           "STYLEPROBE_GATEWAY_LISTEN": f"127.0.0.1:{gateway_port}",
           "STYLEPROBE_GATEWAY_ORCHESTRATOR": stack.grpc_address,
           "STYLEPROBE_GATEWAY_TOKEN": stack.token,
           "STYLEPROBE_GATEWAY_ROUTES": json.dumps(routes),
           "STYLEPROBE_GATEWAY_DESTINATION": f"{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}",
           "STYLEPROBE_GATEWAY_SERIES_TIMEOUT_S": "2", "STYLEPROBE_GATEWAY_JOB_TIMEOUT_S": "500",
           "STYLEPROBE_METRICS_PORT": str(free_port())}
    gateway = ServerProcess(
        "dicom-gateway", [venv_program("styleprobe"), "--log-level", "INFO", "serve",
                          "dicom-gateway"],
        lambda: port_open(gateway_port), workdir / "gateway.log", env)
    try:
        gateway.start(timeout_s=60)
        yield orthanc, gateway, gateway_port
    finally:
        gateway.stop()
        orthanc_process.stop()


def result_series(client: DICOMwebClient, study: str) -> dict[str, dict]:
    """The StyleProbe series of ``study`` found by QIDO-RS, by modality."""
    found = client.search_for_series(study, fields=["SeriesDescription"])
    return {entry["0020000E"]["Value"][0]: entry for entry in found
            if "StyleProbe" in entry.get("0008103E", {}).get("Value", [""])[0]}


def test_pacs_round_trip(stack: ServiceStack, pacs: tuple[Orthanc, ServerProcess, int],
                         sources: list[Path]) -> None:
    orthanc, gateway, gateway_port = pacs
    store(gateway_port, sources)
    originals = [pydicom.dcmread(path) for path in sources]
    client = DICOMwebClient(url=orthanc.dicomweb_url)
    deadline = time.monotonic() + WAIT_S
    studies = {str(ds.StudyInstanceUID) for ds in originals}
    expected = {"CT": 2, "MR": 2, "DX": 4}  # SC instances per study: 2 per source image
    while time.monotonic() < deadline:
        instances = sum(len(client.search_for_instances(study, uid))
                        for study in studies for uid, series in result_series(
                            client, study).items()
                        if series["00080060"]["Value"][0] == "OT")
        if instances == sum(expected.values()):
            break
        assert gateway.running(), gateway.log_tail()
        time.sleep(2)
    else:
        pytest.fail(f"results not in Orthanc after {WAIT_S:.0f} s:\n{gateway.log_tail()}")

    for source in originals:
        check_results(client, source)
    check_jobs(stack, originals)
    check_privacy(stack, gateway, originals)

    # CT_small sent again: its job is found by its key (no second explanation) and its
    # results, built again with the same UIDs, replace themselves in Orthanc
    answered = gateway.log_path.read_text().count('"results sent"')
    store(gateway_port, sources[:1])
    while gateway.log_path.read_text().count('"results sent"') == answered:
        assert time.monotonic() < deadline and gateway.running(), gateway.log_tail()
        time.sleep(1)
    check_results(client, originals[0])
    check_jobs(stack, originals[:1])
    metrics = f"http://127.0.0.1:{gateway.env['STYLEPROBE_METRICS_PORT']}/metrics"
    with urllib.request.urlopen(metrics, timeout=10) as response:
        page = response.read().decode()
    assert 'styleprobe_gateway_instances_total{outcome="received"} 5.0' in page
    assert 'styleprobe_gateway_instances_total{outcome="sent"} 5.0' in page


def store(port: int, files: list[Path]) -> None:
    """``storescu`` the files to the gateway, as a modality would."""
    sent = subprocess.run(
        [shutil.which("storescu") or "storescu", "-aet", MODALITY_AET, "-aec", GATEWAY_AET,
         "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr


def check_results(client: DICOMwebClient, source: Dataset) -> None:
    study = str(source.StudyInstanceUID)
    mine = [ds for ds in all_instances(client, study)
            if any(ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
                   for ref in references(ds))]
    sc = [ds for ds in mine if ds.Modality == "OT"]
    sr = [ds for ds in mine if ds.Modality == "SR"]
    assert len(sc) == 2 and len(sr) == 1, [ds.SOPClassUID.name for ds in mine]
    for ds in mine:
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.SOPInstanceUID != source.SOPInstanceUID
        assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
        assert ds.PatientName == source.PatientName and ds.PatientID == source.PatientID
        equipment = [item for item in ds.ContributingEquipmentSequence
                     if item.Manufacturer == "StyleProbe"]
        assert len(equipment) == 1 and "classifier=" in str(equipment[0].SoftwareVersions)
    traversal = next(ds for ds in sc if ds.PhotometricInterpretation == "MONOCHROME2")
    differences = next(ds for ds in sc if ds.PhotometricInterpretation == "RGB")
    assert traversal.pixel_array.ndim == 3 and len(traversal.pixel_array) == 5
    assert differences.pixel_array.ndim == 4 and differences.pixel_array.shape[::3] == (5, 3)
    assert len(traversal.FrameLabelVector) == 5
    report = hd.sr.srread(io.BytesIO(to_bytes(sr[0])))
    assert isinstance(report, hd.sr.ComprehensiveSR)
    groups = report.content.get_image_measurement_groups()
    names = {m.name.meaning for group in groups for m in group.get_measurements()}
    assert {"Probability of OA on the input", "Probability of OA on the reconstruction",
            "Latent predictor direction AUC"} <= names
    evaluations = {(e.name.meaning, e.value.meaning)
                   for group in groups for e in group.get_qualitative_evaluations()}
    if source.Modality in ("CT", "MR"):
        assert ("Reliability reason", "out of domain") in evaluations
        assert ("Explanation reliability", "Unreliable") in evaluations
    else:
        assert ("Reliability reason", "out of domain") not in evaluations


def all_instances(client: DICOMwebClient, study: str) -> list[Dataset]:
    return [pydicom.dcmread(io.BytesIO(to_bytes(ds)))
            for uid in result_series(client, study)
            for ds in client.retrieve_series(study, uid)]


def references(ds: Dataset) -> list[Dataset]:
    """The source references of a result: an SC's Source Image Sequence, an SR's
    evidence."""
    if "SourceImageSequence" in ds:
        return list(ds.SourceImageSequence)
    return [ref for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
            for series in study.ReferencedSeriesSequence
            for ref in series.ReferencedSOPSequence]


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def check_jobs(stack: ServiceStack, originals: list[Dataset]) -> None:
    """Each job is found by its idempotency key, with the source's DICOM reference."""
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = rpc.StyleProbeStub(channel)
        metadata = (("authorization", f"Bearer {stack.token}"),)
        for source in originals:
            listed = stub.ListJobs(pb.ListJobsRequest(
                idempotency_key=idempotency_key(source, KNEE)), metadata=metadata).jobs
            assert len(listed) == 1 and listed[0].state == pb.JOB_STATE_SUCCEEDED
            dicom = listed[0].dicom
            assert (dicom.sop_instance_uid, dicom.study_instance_uid, dicom.modality) == (
                source.SOPInstanceUID, source.StudyInstanceUID, source.Modality)
            job = stub.GetJob(pb.GetJobRequest(job_id=listed[0].job_id), metadata=metadata)
            assert job.explanation.quality.out_of_domain == (source.Modality in ("CT", "MR"))


def check_privacy(stack: ServiceStack, gateway: ServerProcess,
                  originals: list[Dataset]) -> None:
    """No patient name or id in the service's logs or bucket (the gateway's log too)."""
    secrets = {str(value) for ds in originals
               for value in (ds.PatientName, ds.PatientID) if str(value)}
    secrets |= {str(ds.PatientName).split("^")[0] for ds in originals if ds.PatientName}
    logs = [stack.workdir / "orchestrator.log", *stack.workdir.glob("worker*.log"),
            gateway.log_path]
    for path in logs:
        text = path.read_text(errors="replace")
        assert not [s for s in secrets if s in text], path.name
    from minio import Minio

    settings = stack.settings()
    bucket = Minio(settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key,
                   secure=False)
    objects = list(bucket.list_objects(settings.s3_bucket, recursive=True))
    assert objects
    # Every value in the text of every text object (without its base64 images); the long
    # ones (the knee patient's name and id) in every byte: a 4-character id such as
    # MR_small's "4MR1" turns up by chance in compressed pixels.
    long = [s for s in secrets if len(s) >= 8]
    assert long
    for entry in objects:
        name = str(entry.object_name)
        data = bucket.get_object(settings.s3_bucket, name).read()
        assert not [s for s in long if s.encode() in data], name
        if name.endswith((".json", ".html", ".csv", ".txt")):
            text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", data.decode(errors="replace"))
            assert not [s for s in secrets if s in text], name
