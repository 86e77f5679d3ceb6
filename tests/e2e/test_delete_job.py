"""DeleteJob end to end: a finished job's objects and record gone at once, a running job
cancelled first, a cohort with its images' folders, refusals, and ``styleprobe client
delete`` (real Redis, S3, Triton, orchestrator and workers: see conftest.py)."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import grpc
import pytest

from service_calls import auth, finished, knee_pngs
from styleprobe.api import pb, rpc
from styleprobe.jobs import PREFIX as JOB_PREFIX
from styleprobe.jobs import JobStore
from styleprobe.storage import ArtifactStore, open_store
from styleprobe.testing.process import venv_program
from styleprobe.testing.stack import ServiceStack

TINY = "tiny"
LAMBDAS = "-2:2:5"
PROBE = pb.ProbeOptions(samples=400, seed=43)
WAIT_S = 300.0





def explain(stack: ServiceStack, stub: rpc.StyleProbeStub, seed: int,
            probe: pb.ProbeOptions = PROBE) -> pb.Job:
    return stub.Explain(pb.ExplainRequest(
        image_bytes=knee_pngs(1, seed)[0], filename="knee.png", model_set=TINY,
        lambdas=LAMBDAS, options=pb.ExplainOptions(probe=probe)),
        metadata=auth(stack.token), timeout=30)


def job_objects(store: ArtifactStore, job_id: str) -> list[str]:
    return [key for key in store.list() if key.startswith(
        (f"jobs/{job_id}/", f"jobs/{job_id}-", f"cohorts/{job_id}/"))]


def redis_keys(stack: ServiceStack, job_id: str) -> list[str]:
    jobs = JobStore(stack.settings().redis_url)
    try:
        return list(jobs.redis.scan_iter(f"{JOB_PREFIX}{job_id}*"))
    finally:
        jobs.close()


def status(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.StyleProbeStub:
    return rpc.StyleProbeStub(channel)


def test_delete_removes_a_finished_jobs_objects_and_record(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    job = finished(stub, stack.token, explain(stack, stub, seed=1))
    store = open_store(stack.settings())
    stored = job_objects(store, job.job_id)
    assert f"jobs/{job.job_id}/manifest.json" in stored
    strip_url = {a.name: a.url for a in job.explanation.artifacts}["strip"]
    direction = job.explanation.direction.key

    answer = stub.DeleteJob(pb.DeleteJobRequest(job_id=job.job_id), metadata=token,
                            timeout=60)
    assert (answer.job_id, answer.objects_deleted) == (job.job_id, len(stored))
    assert job_objects(store, job.job_id) == [] and redis_keys(stack, job.job_id) == []
    assert status(lambda: stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token,
                                      timeout=10)) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(urllib.error.HTTPError):  # a URL handed out before fetches nothing
        urllib.request.urlopen(strip_url, timeout=10)
    assert store.exists(direction)  # shared, no patient data: kept
    assert status(lambda: stub.DeleteJob(pb.DeleteJobRequest(job_id=job.job_id),
                                         metadata=token, timeout=10)
                  ) == grpc.StatusCode.NOT_FOUND


def test_a_running_job_is_cancelled_then_deleted(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    slow = pb.ProbeOptions(samples=20000, seed=4301)  # a fresh direction, probed a while
    job = explain(stack, stub, seed=2, probe=slow)
    deadline = time.monotonic() + WAIT_S
    while stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token,
                      timeout=10).state != pb.JOB_STATE_RUNNING:
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.1)
    stub.DeleteJob(pb.DeleteJobRequest(job_id=job.job_id), metadata=token, timeout=60)
    assert redis_keys(stack, job.job_id) == []
    assert status(lambda: stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token,
                                      timeout=10)) == grpc.StatusCode.NOT_FOUND
    # the stage that was running stops at its next step, quietly, and removes what it wrote
    def lines() -> list[str]:
        return [line for worker in stack.workers.values()
                for line in worker.log_path.read_text(errors="replace").splitlines()
                if job.job_id in line]

    deadline = time.monotonic() + WAIT_S
    while not any("task of a deleted job stopped" in line for line in lines()):
        assert time.monotonic() < deadline, "the running stage never stopped"
        time.sleep(0.2)
    assert not [line for line in lines() if '"level": "ERROR"' in line]
    assert job_objects(open_store(stack.settings()), job.job_id) == []
    assert redis_keys(stack, job.job_id) == []


def test_a_cohort_is_deleted_with_its_images_folders(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    images = pb.InlineImages(images=[pb.InlineImage(data=data, filename=f"knee-{i}.png")
                                     for i, data in enumerate(knee_pngs(3, seed=3))])
    job = finished(stub, stack.token, stub.SubmitCohort(pb.SubmitCohortRequest(
        inline=images, model_set=TINY, lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE)),
        metadata=token, timeout=30))
    store = open_store(stack.settings())
    stored = job_objects(store, job.job_id)
    folders = {key.split("/")[1] for key in stored if key.startswith("jobs/")}
    assert len(folders) == 3 and store.list(f"cohorts/{job.job_id}/inputs/")
    answer = stub.DeleteJob(pb.DeleteJobRequest(job_id=job.job_id), metadata=token,
                            timeout=60)
    assert answer.objects_deleted == len(stored)
    assert job_objects(store, job.job_id) == [] and redis_keys(stack, job.job_id) == []


def test_a_deleted_jobs_idempotency_key_makes_a_new_job(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    request = pb.ExplainRequest(image_bytes=knee_pngs(1, seed=6)[0], model_set=TINY,
                                lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE),
                                idempotency_key="sop-1.2.3.4-delete-test")
    first = stub.Explain(request, metadata=token, timeout=30)
    assert stub.Explain(request, metadata=token, timeout=30).job_id == first.job_id
    stub.DeleteJob(pb.DeleteJobRequest(job_id=first.job_id), metadata=token, timeout=60)
    second = stub.Explain(request, metadata=token, timeout=10)  # at once, not after a wait
    assert second.job_id != first.job_id
    stub.DeleteJob(pb.DeleteJobRequest(job_id=second.job_id), metadata=token, timeout=60)


def test_a_job_whose_results_are_gone_is_not_found(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    """Results removed under a record that remains (the bucket's lifecycle rule, or by
    hand): NOT_FOUND, not UNAVAILABLE."""
    token = auth(stack.token)
    job = explain(stack, stub, seed=7)
    jobs = JobStore(stack.settings().redis_url)
    try:  # watched in Redis: a reply the service built would be kept in its memory
        deadline = time.monotonic() + WAIT_S
        while not jobs.get(job.job_id).ended:
            assert time.monotonic() < deadline, "the job never ended"
            time.sleep(0.2)
        assert jobs.get(job.job_id).state == "succeeded"
    finally:
        jobs.close()
    store = open_store(stack.settings())
    store.delete(f"jobs/{job.job_id}/strip.png")
    assert status(lambda: list(stub.GetArtifact(
        pb.GetArtifactRequest(job_id=job.job_id, name="strip"), metadata=token,
        timeout=30))) == grpc.StatusCode.NOT_FOUND
    store.delete(f"jobs/{job.job_id}/manifest.json")
    assert status(lambda: stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token,
                                      timeout=10)) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("job_id", ["", "../jobs", "a/b", "x" * 200])
def test_bad_ids_are_refused_and_nothing_is_removed(
        stack: ServiceStack, stub: rpc.StyleProbeStub, job_id: str) -> None:
    store = open_store(stack.settings())
    before = store.list()
    assert status(lambda: stub.DeleteJob(pb.DeleteJobRequest(job_id=job_id),
                                         metadata=auth(stack.token), timeout=10)
                  ) == grpc.StatusCode.INVALID_ARGUMENT
    assert store.list() == before


def test_cli_delete(stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    job = finished(stub, stack.token, explain(stack, stub, seed=5))
    count = len(job_objects(open_store(stack.settings()), job.job_id))
    base = [venv_program("styleprobe"), "client", "delete", "--server", stack.grpc_address,
            "--token", stack.token, job.job_id]
    done = subprocess.run(base, capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == f"deleted job {job.job_id}: {count} objects"
    again = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "NOT_FOUND" in again.stderr
