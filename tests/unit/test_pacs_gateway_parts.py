"""The DICOM gateway's parts without servers: routing rules, what leaves for the engine
(no patient attribute), the idempotency key, series grouping by inactivity, the result
objects (same study, new UIDs, references, frames, SR content), and what the gateway does
with one instance (the engine a double here; tests/e2e/test_pacs_gateway.py runs it for
real)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from prometheus_client import REGISTRY
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.data.codecs import decode
from styleprobe.gateway.calls import EngineError, JobFailedError, Outcome
from styleprobe.gateway.deidentify import engine_copy, idempotency_key
from styleprobe.gateway.results import build_results, frame_labels
from styleprobe.gateway.routing import RoutingError, parse_routes, route
from styleprobe.gateway.send import Destination
from styleprobe.gateway.series import Series, SeriesBuffer
from styleprobe.gateway.server import Gateway
from styleprobe.metrics import GATEWAY_OUTCOMES


def source(name: str = "CT_small.dcm") -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def test_the_first_matching_rule_routes() -> None:
    rules = parse_routes(
        '[{"calling_ae": "XR1", "body_part": "knee", "model_set": "knee-oa"},'
        ' {"series_description": "^h&e", "model_set": "histology-tumour"},'
        ' {"modality": "CT", "model_set": "knee-oa", "target": "OA", "lambdas": "-2:2:5"}]')
    ct = source()
    assert route(rules, "ANY", ct) == rules[2]
    knee = Dataset()
    knee.Modality, knee.BodyPartExamined = "DX", "KNEE"
    assert route(rules, "XR1 ", knee) == rules[0] and route(rules, "XR2", knee) is None
    knee.SeriesDescription = "H&E slide 4"
    assert route(rules, "XR2", knee) == rules[1]


@pytest.mark.parametrize(("text", "words"), [
    ("{", "not JSON"), ("{}", "JSON list"), ('[{"modality": "CT"}]', "no model_set"),
    ('[{"model_set": "k", "station": "x"}]', "unknown field"),
    ('[{"model_set": "k", "series_description": "("}]', "regular expression")])
def test_bad_rules_are_refused(text: str, words: str) -> None:
    with pytest.raises(RoutingError, match=words):
        parse_routes(text)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_what_leaves_the_gateway_has_no_patient_attribute(name: str) -> None:
    original = source(name)
    data = engine_copy(original)
    copy = pydicom.dcmread(io.BytesIO(data))
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
                    "InstitutionName", "ReferringPhysicianName", "StudyDate", "StudyID"):
        assert keyword not in copy
    for identity in (original.PatientName, original.PatientID):
        assert str(identity).encode() not in data
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    np.testing.assert_array_equal(decode(data).pixels,
                                  decode(get_testdata_file(name)).pixels)


def test_the_key_is_one_per_instance_and_model_set() -> None:
    ct, mr = source(), source("MR_small.dcm")
    assert idempotency_key(ct, "knee-oa") == idempotency_key(source(), "knee-oa")
    assert len({idempotency_key(ct, "knee-oa"), idempotency_key(ct, "other"),
                idempotency_key(mr, "knee-oa")}) == 3


def test_destination_is_parsed() -> None:
    assert Destination.parse("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    with pytest.raises(ValueError, match="AET@host:port"):
        Destination.parse("PACS:104")


def test_a_series_is_handed_on_after_its_quiet_time() -> None:
    handed: list[Series] = []
    event = threading.Event()
    buffer = SeriesBuffer(0.3, lambda series: (handed.append(series), event.set()),
                          poll_s=0.05)
    try:
        first, second = source(), source()
        second.SOPInstanceUID = pydicom.uid.generate_uid()
        buffer.add(first, "A")
        buffer.add(second, "A")
        buffer.add(first, "A")  # sent again: replaces
        assert buffer.pending() == 1
        assert event.wait(5)
    finally:
        buffer.close()
    assert len(handed) == 1 and len(handed[0].instances) == 2


def job(found: bool = True) -> pb.Job:
    return pb.Job(job_id="j1", model_set="knee-oa", target="OA", explanation=pb.Explanation(
        lambdas=[-2, -1, 0, 1, 2], prediction_input=0.2, prediction_reconstruction=0.3,
        flip=pb.Flip(found=found, at_lambda=1.2), direction=pb.DirectionSummary(auc=0.9),
        quality=pb.ReconstructionQuality(
            pixel_mse=0.1, unreliable=True, reasons=["a", "b"], out_of_domain=True,
            reason_codes=[pb.RELIABILITY_REASON_OUT_OF_DOMAIN,
                          pb.RELIABILITY_REASON_PIXEL_ERROR]),
        models={"classifier": "knee-oa-classifier/1", "encoder": "knee-oa-encoder/1"}))


def test_results_are_in_the_source_study_with_references() -> None:
    original = source()
    frames = [np.full((64, 64), 40 * i, np.uint8) for i in range(5)]
    maps = [np.full((64, 64, 3), i, np.uint8) for i in range(5)]
    results = build_results(original, job(), frames, maps)
    read = [pydicom.dcmread(io.BytesIO(_bytes(ds))) for ds in results]
    traversal, differences, report = read
    assert {ds.StudyInstanceUID for ds in read} == {original.StudyInstanceUID}
    assert traversal.SeriesInstanceUID == differences.SeriesInstanceUID
    assert len({original.SeriesInstanceUID, traversal.SeriesInstanceUID,
                report.SeriesInstanceUID}) == 3
    assert traversal.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    np.testing.assert_array_equal(traversal.pixel_array, np.stack(frames))
    assert differences.pixel_array.shape == (5, 64, 64, 3)
    assert list(traversal.FrameLabelVector) == frame_labels(job())
    assert frame_labels(job())[3] == "+1.000 FLIP"
    assert all("FLIP" not in label for label in frame_labels(job(found=False)))
    for ds in read:
        assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
        assert ds.PatientName == original.PatientName
        assert "StyleProbe" in [item.Manufacturer for item in ds.ContributingEquipmentSequence]
    sr = hd.sr.srread(io.BytesIO(_bytes(report)))
    group = sr.content.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Flip lambda"] == pytest.approx(1.2)
    assert values["Probability of OA on the input"] == pytest.approx(0.2)
    reasons = [e.value.meaning for e in group.get_qualitative_evaluations()
               if e.name.meaning == "Reliability reason"]
    assert reasons == ["out of domain", "pixel error"]


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_the_frame_explained_of_a_multi_frame_source_is_referenced() -> None:
    original = source()
    original.NumberOfFrames = 10  # only its header is read
    explained = job()
    explained.dicom.frame = 5  # the middle frame, 0-based, as the service reports it
    traversal, _, report = build_results(
        original, explained, [np.zeros((8, 8), np.uint8)] * 5,
        [np.zeros((8, 8, 3), np.uint8)] * 5)
    assert traversal.SourceImageSequence[0].ReferencedFrameNumber == 6
    sr = hd.sr.srread(io.BytesIO(_bytes(report)))
    group = sr.content.get_image_measurement_groups()[0]
    assert group.source_images[0].referenced_frame_numbers == [6]


class FakeEngine:
    """Answers explain() with a succeeded job, or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[tuple[bytes, str, str]] = []

    def explain(self, data: bytes, chosen: object, key: str) -> Outcome:
        self.calls.append((data, getattr(chosen, "model_set", ""), key))
        if self.error is not None:
            raise self.error
        return Outcome(job(), [np.zeros((8, 8), np.uint8)] * 5,
                       [np.zeros((8, 8, 3), np.uint8)] * 5)

    def close(self) -> None:
        pass


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Gateway, list[list[Dataset]]]]:
    sent: list[list[Dataset]] = []
    monkeypatch.setattr("styleprobe.gateway.server.c_store",
                        lambda results, destination, calling, tls: sent.append(results))
    settings = Settings(gateway_routes='[{"modality": "CT", "model_set": "knee-oa"}]',
                        gateway_destination="PACS@127.0.0.1:104", gateway_listen="127.0.0.1:0")
    instance = Gateway(settings)
    instance.engine = FakeEngine()  # type: ignore[assignment]
    yield instance, sent
    instance.close()


def test_a_routed_instance_is_explained_and_answered(
        gateway: tuple[Gateway, list[list[Dataset]]]) -> None:
    instance, sent = gateway
    original = source()
    results = instance.process(original, "ANY")
    assert len(results) == 3 and sent == [results]
    data, model_set, key = instance.engine.calls[0]  # type: ignore[attr-defined]
    assert model_set == "knee-oa" and key == idempotency_key(original, "knee-oa")
    assert str(original.PatientName).encode() not in data


def test_unrouted_or_failed_instances_send_nothing(
        gateway: tuple[Gateway, list[list[Dataset]]]) -> None:
    instance, sent = gateway
    assert instance.process(source("MR_small.dcm"), "ANY") == []  # no rule for MR
    instance.engine = FakeEngine(EngineError("job j1 FAILED"))  # type: ignore[assignment]
    assert instance.process(source(), "ANY") == []
    assert sent == []


def test_results_built_again_for_a_job_have_the_same_uids() -> None:
    frames, maps = [np.zeros((8, 8), np.uint8)] * 5, [np.zeros((8, 8, 3), np.uint8)] * 5
    first = build_results(source(), job(), frames, maps)
    again = build_results(source(), job(), frames, maps)
    other = job()
    other.job_id = "j2"
    uids = [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in first]
    assert uids == [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in again]
    assert len({sop for _, sop in uids}) == 3 and all(len(sop) <= 64 for _, sop in uids)
    assert not {sop for _, sop in uids} & {
        ds.SOPInstanceUID for ds in build_results(source(), other, frames, maps)}


class FailingOnce(FakeEngine):
    """The first key's job failed; the next succeeds."""

    def explain(self, data: bytes, chosen: object, key: str) -> Outcome:
        self.error = JobFailedError("job j0 JOB_STATE_FAILED") if not self.calls else None
        return super().explain(data, chosen, key)


def test_a_failed_job_is_followed_by_one_under_a_key_of_its_own(
        gateway: tuple[Gateway, list[list[Dataset]]]) -> None:
    instance, sent = gateway
    instance.engine = FailingOnce()  # type: ignore[assignment]
    original = source()
    assert instance.process(original, "ANY")
    keys = [key for _, _, key in instance.engine.calls]  # type: ignore[attr-defined]
    assert keys == [idempotency_key(original, "knee-oa"),
                    idempotency_key(original, "knee-oa", attempt=2)]
    assert len(sent) == 1
    instance.engine = FakeEngine(JobFailedError("failed"))  # type: ignore[assignment]
    assert instance.process(original, "ANY") == []
    assert len(instance.engine.calls) == 3  # type: ignore[attr-defined]


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("styleprobe_gateway_instances_total",
                                     {"outcome": outcome}) or 0.0


def test_what_becomes_of_each_instance_is_counted(
        gateway: tuple[Gateway, list[list[Dataset]]]) -> None:
    instance, _ = gateway
    before = {outcome: counted(outcome) for outcome in GATEWAY_OUTCOMES}
    instance.receive(source(), "ANY")
    instance.process(source(), "ANY")
    instance.process(source("MR_small.dcm"), "ANY")
    instance.engine = FakeEngine(EngineError("refused"))  # type: ignore[assignment]
    instance.process(source(), "ANY")
    assert {outcome: counted(outcome) - before[outcome] for outcome in GATEWAY_OUTCOMES} == {
        "received": 1, "sent": 1, "unrouted": 1, "not_explained": 1, "not_sent": 0}
