"""A client's file names and DICOM strings stay out of the logs: an Explain request and a
cohort image named after a patient, read (or refused) with every logger at DEBUG."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from image_files import PATIENT, dicom_file
from styleprobe.api import pb
from styleprobe.backends.local import LocalBackend
from styleprobe.cohort.ledger import CohortLedger, CohortSpec
from styleprobe.cohort.runner import CohortRunner
from styleprobe.explain.spec import JobSpec
from styleprobe.logs import fingerprint
from styleprobe.orchestrator.requests import RequestError, check_explain
from styleprobe.storage.local import LocalStore

FILENAME = "Doe_Jane_1956-03-14_knee.dcm"
SECRETS = (FILENAME, "Doe_Jane", "Doe^Jane", "1956-03-14")


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(f"{record.getMessage()} {record.__dict__}" for record in caplog.records)


def test_an_explain_request_logs_no_file_name_or_dicom_string(
        tiny_repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    multi_frame = dicom_file(16, 16, frames=3, description=f"knee of {PATIENT}")
    caplog.set_level(logging.DEBUG)
    check_explain(pb.ExplainRequest(image_bytes=multi_frame, filename=FILENAME,
                                    model_set="tiny"), tiny_repository, LocalStore(tmp_path), 400)
    with pytest.raises(RequestError):  # refused: its message names the file, the log must not
        check_explain(pb.ExplainRequest(image_bytes=multi_frame[:400], filename=FILENAME,
                                        model_set="tiny"),
                      tiny_repository, LocalStore(tmp_path), 400)
    assert caplog.records, "the multi-frame input was expected to be logged (by its frames)"
    text = logged(caplog)
    assert not [secret for secret in SECRETS if secret in text], text


def test_a_failed_cohort_image_is_logged_by_fingerprint(
        tiny_repository: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path)
    ledger = CohortLedger(store, "c1")
    ledger.start(CohortSpec(cohort_id="c1", threshold=0.5,
                            job=JobSpec(model_set="tiny", target="sick")))
    runner = CohortRunner(store, ledger, lambda name: dicom_file(16, 16)[:300],
                          lambda: LocalBackend(tiny_repository, "tiny"))
    caplog.set_level(logging.DEBUG)
    runner.run_models([f"inputs/{FILENAME}"])
    text = logged(caplog)
    assert fingerprint(f"inputs/{FILENAME}") in text
    assert not [secret for secret in SECRETS if secret in text], text
