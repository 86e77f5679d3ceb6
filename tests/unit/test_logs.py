"""JSON log lines carry the job and request ids, and never pixel data or DICOM identifiers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from styleprobe.data.codecs import decode
from styleprobe.logs import configure_logging, log_context

log = logging.getLogger("styleprobe.test")


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict]]]:
    """Configure logging as a process does (into a buffer); a function that returns the
    lines written so far, parsed."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging("INFO")
    buffer = io.StringIO()
    root.handlers[0].setStream(buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    root.handlers[:], root.level = saved


def test_lines_carry_job_and_request_ids(lines: Callable[[], list[dict]]) -> None:
    with log_context(request_id="r-1"):
        log.info("accepted")
        with log_context(job_id="j-9"):
            log.info("running", extra={"stage": "encode"})
    log.info("idle")
    accepted, running, idle = lines()
    assert accepted["request_id"] == "r-1" and "job_id" not in accepted
    assert (running["request_id"], running["job_id"], running["stage"]) == ("r-1", "j-9",
                                                                            "encode")
    assert "request_id" not in idle and idle["message"] == "idle"
    with pytest.raises(ValueError, match="unknown log context"):
        log_context(user="x").__enter__()


def test_pixel_data_never_reaches_a_log(lines: Callable[[], list[dict]]) -> None:
    image = np.full((64, 64), 0.123456, np.float32)
    log.info("input %s", image)
    log.info("upload", extra={"data": b"\x89PNG" + bytes(1000), "frames": [image, image]})
    first, second = lines()
    assert "0.123456" not in first["message"]
    assert first["message"] == "input [redacted] array of shape (64, 64)"
    assert second["data"] == "[redacted] 1004 bytes"
    assert second["frames"] == ["[redacted] array of shape (64, 64)"] * 2


def test_dicom_patient_identifiers_never_reach_a_log(lines: Callable[[], list[dict]]) -> None:
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    secrets = [str(ds.PatientName), str(ds.PatientID)]
    assert all(secrets)
    log.info("read %s", ds)  # the whole data set as an argument
    log.info("header: " + str(ds))  # or printed into the message
    log.info("tags", extra={"PatientName": str(ds.PatientName), "patient_id": ds.PatientID,
                            "meta": {"AccessionNumber": "A1", "Modality": ds.Modality}})
    try:
        raise ValueError(f"bad element (0010, 0020) Patient ID: {ds.PatientID}")
    except ValueError:
        log.exception("failed")
    log.info("described", extra={"input": decode(path).describe()})
    out = lines()
    text = json.dumps(out)
    assert not any(secret in text for secret in secrets)
    assert out[0]["message"] == "read [redacted] FileDataset"
    assert out[1]["message"].startswith("[redacted]")
    assert out[2]["PatientName"] == out[2]["patient_id"] == "[redacted]"
    assert out[2]["meta"] == {"AccessionNumber": "[redacted]", "Modality": "CT"}
    assert out[3]["exception"] == "ValueError: [redacted] exception text"
    assert out[4]["input"]["format"] == "DICOM"  # safe metadata stays

