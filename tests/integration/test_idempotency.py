"""Idempotency keys on a real, fresh ``redis-server``: a retried Explain or SubmitCohort
with the same key returns the same job, concurrent retries make one job, a refused
request releases its key; and the DICOM reference of a DICOM input is echoed on the job."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

import required
from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.orchestrator.idempotency import claim_name
from styleprobe.orchestrator.requests import RequestError
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore
from styleprobe.testing.redis import redis_server


class NoDeadline:
    """The one part of a gRPC context Explain reads."""

    def time_remaining(self) -> float | None:
        return None


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    required.program("redis-server")
    server, url = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield url
    server.stop()


@pytest.fixture
def service(redis_url: str, tiny_repository: Path, tmp_path: Path) -> Iterator[StyleProbeService]:
    settings = Settings(redis_url=redis_url, model_repository=str(tiny_repository),
                        store_dir=str(tmp_path / "store"))
    jobs = JobStore(redis_url, ttl_s=60)
    yield StyleProbeService(settings, LocalStore(tmp_path / "store"), jobs)
    jobs.close()


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def explain(service: StyleProbeService, **fields: object) -> pb.Job:
    return service._explain(pb.ExplainRequest(model_set="tiny", **fields),  # type: ignore[arg-type]
                            NoDeadline())  # type: ignore[arg-type]


def stored_inputs(service: StyleProbeService) -> list[str]:
    return [key for key in service.store.list("jobs/") if key.endswith("input.json")]


def test_a_retried_explain_with_the_same_key_returns_the_same_job(
        service: StyleProbeService) -> None:
    first = explain(service, image_bytes=png(), idempotency_key="sop-1.2.3|knee-oa")
    again = explain(service, image_bytes=png(), idempotency_key="sop-1.2.3|knee-oa",
                    lambdas="-2:2:5")  # whatever the other fields say
    other = explain(service, image_bytes=png(), idempotency_key="sop-1.2.4|knee-oa")
    plain = [explain(service, image_bytes=png()) for _ in range(2)]
    assert again.job_id == first.job_id
    assert again.idempotency_key == first.idempotency_key == "sop-1.2.3|knee-oa"
    assert len({first.job_id, other.job_id, *(job.job_id for job in plain)}) == 4
    assert len(stored_inputs(service)) == 4


def test_concurrent_retries_make_one_job(service: StyleProbeService) -> None:
    answers: list[str] = []
    barrier = threading.Barrier(4)

    def call() -> None:
        barrier.wait()
        answers.append(explain(service, image_bytes=png(), idempotency_key="race").job_id)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and len(set(answers)) == 1
    assert len(stored_inputs(service)) == 1


def test_a_refused_request_releases_its_key(service: StyleProbeService) -> None:
    with pytest.raises(RequestError) as refused:
        explain(service, image_bytes=b"no image", idempotency_key="fix-and-retry")
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert service.jobs.redis.get(claim_name("fix-and-retry")) is None
    assert explain(service, image_bytes=png(), idempotency_key="fix-and-retry").job_id


@pytest.mark.parametrize(("key", "words"), [
    ("x" * 201, "at most 200"), ("tab\there", "printable"), ("   ", "printable")])
def test_a_bad_key_is_refused_and_nothing_stored(service: StyleProbeService, key: str,
                                                  words: str) -> None:
    with pytest.raises(RequestError) as refused:
        explain(service, image_bytes=png(), idempotency_key=key)
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in str(refused.value)
    assert stored_inputs(service) == []


def test_a_retried_cohort_with_the_same_key_returns_the_same_job(
        service: StyleProbeService) -> None:
    request = pb.SubmitCohortRequest(
        model_set="tiny", idempotency_key="cohort-7",
        inline=pb.InlineImages(images=[pb.InlineImage(data=png(), filename="a.png")]))
    first, again = service._submit_cohort(request), service._submit_cohort(request)
    assert first.job_id == again.job_id and first.kind == "cohort"
    with pytest.raises(RequestError) as refused:  # an explain cannot reuse a cohort's key
        explain(service, image_bytes=png(), idempotency_key="cohort-7")
    assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS


def test_the_dicom_reference_of_the_input_is_echoed(service: StyleProbeService) -> None:
    data = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    job = explain(service, image_bytes=data)
    dicom = service._get_job(job.job_id).dicom
    assert dicom.study_instance_uid == "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457"
    assert dicom.sop_instance_uid == "1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457"
    assert dicom.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert (dicom.modality, dicom.frame, dicom.frames) == ("MR", 0, 1)
    assert (dicom.window_center, dicom.window_width) == (600.0, 1600.0)
    assert not explain(service, image_bytes=png()).HasField("dicom")
