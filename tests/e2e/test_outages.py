"""Dependency outages on the real stack (CPU tritonserver, SeaweedFS S3, Redis, two workers):
Triton killed and back, S3 down mid-cohort, both workers killed (issue 17).

What the service promises (README "Running the service", proto comments): while a
dependency is down, new Explain/SubmitCohort calls are refused with UNAVAILABLE at once;
jobs already accepted wait it out (their model and store calls are retried for
STYLEPROBE_TRITON_RETRY_S / STYLEPROBE_S3_RETRY_S), reading PAUSED with the reason
meanwhile, and succeed once it is back, every cohort image once, with no partial job
folder left; the tasks of killed workers are handed out again at the next liveness beat of
a living worker, not after the broker's visibility timeout. Waits are generous (the
machine is shared); the times measured are printed, never asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

import required
from service_calls import auth, knee_pngs
from styleprobe.api import pb, rpc
from styleprobe.healthcheck import grpc_serving
from styleprobe.jobs import JobStore
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.storage import open_store
from styleprobe.testing.process import venv_program
from styleprobe.testing.stack import ServiceStack

TINY = "tiny"
LAMBDAS = "-3:3:5"
PROBE = pb.ProbeOptions(samples=400, seed=17)
WAIT_S = 600.0  # well under VISIBILITY_S: a task left to the broker's timeout fails the test
SOFT, HARD, VISIBILITY_S = 240, 250, 900
HEARTBEAT_S = 1.0
TRITON_RETRY_S = 300  # a CPU tritonserver takes a while to load again after 60 s down
REFUSED = "the service is not ready: {} is unreachable; retry later"
T = TypeVar("T")




def wait_for(condition: Callable[[], T], what: str, timeout_s: float = WAIT_S,
             every_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def triton(tiny_repository: Path, cpu_triton: Callable[..., TritonProcess]
           ) -> Iterator[TritonProcess]:
    """A tritonserver of this module's own on the tiny set only: killed and started again
    here, it loads in seconds (the session's also serves the bundled set), and the other
    modules' server is never disturbed."""
    server = cpu_triton(tiny_repository)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(tiny_repository: Path, triton: TritonProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    for program in ("redis-server", "weed", "styleprobe"):
        required.program(program)
    services = ServiceStack(
        tmp_path_factory.mktemp("outages"), tiny_repository, workers=2, backend="triton",
        triton_url=triton.grpc_url,
        extra_env={"STYLEPROBE_TASK_SOFT_TIME_LIMIT_S": str(SOFT),
                   "STYLEPROBE_TASK_TIME_LIMIT_S": str(HARD),
                   "STYLEPROBE_VISIBILITY_TIMEOUT_S": str(VISIBILITY_S),
                   "STYLEPROBE_WORKER_HEARTBEAT_S": str(HEARTBEAT_S),
                   "STYLEPROBE_TRITON_RETRY_S": str(TRITON_RETRY_S),
                   "STYLEPROBE_PROBE_SAMPLES": "400"})
    with services:
        yield services


@pytest.fixture(scope="module")
def stub(stack: ServiceStack) -> Iterator[rpc.StyleProbeStub]:
    with grpc.insecure_channel(stack.grpc_address) as channel:
        yield rpc.StyleProbeStub(channel)


@pytest.fixture(scope="module")
def jobs(stack: ServiceStack) -> Iterator[JobStore]:
    store = JobStore(stack.settings().redis_url)
    yield store
    store.close()


def upload(stack: ServiceStack, prefix: str, count: int, seed: int) -> list[str]:
    store = open_store(stack.settings())
    keys = [f"{prefix}img-{index:02d}.png" for index in range(count)]
    for key, data in zip(keys, knee_pngs(count, seed), strict=True):
        store.put(key, data)
    return keys


def submit(stack: ServiceStack, stub: rpc.StyleProbeStub, keys: list[str],
           probe: pb.ProbeOptions = PROBE) -> pb.Job:
    return stub.SubmitCohort(pb.SubmitCohortRequest(
        keys=pb.ObjectKeys(keys=keys), model_set=TINY, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=probe)), metadata=auth(stack.token), timeout=30)


def explain_request(probe: pb.ProbeOptions) -> pb.ExplainRequest:
    return pb.ExplainRequest(image_bytes=knee_pngs(1, seed=5)[0], model_set=TINY,
                             lambdas=LAMBDAS, options=pb.ExplainOptions(probe=probe))


def watch(stack: ServiceStack, job_id: str) -> list[pb.JobEvent]:
    """Every event of the job until it ends, on a channel of its own."""
    with grpc.insecure_channel(stack.grpc_address) as channel:
        return list(rpc.StyleProbeStub(channel).WatchJob(
            pb.WatchJobRequest(job_id=job_id), metadata=auth(stack.token), timeout=WAIT_S))


def paused_messages(events: list[pb.JobEvent]) -> list[str]:
    """The messages of the events while the job was paused, after the stream's first event
    (the job as it stood when the stream opened: "job paused" if it already was)."""
    return [e.message for e in events[1:] if e.job.state == pb.JOB_STATE_PAUSED]


def check_cohort(stack: ServiceStack, jobs: JobStore, job: pb.Job, keys: list[str]) -> None:
    """Succeeded, every image explained and counted once, no job folder without manifest."""
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert (job.counts.total, job.counts.done, job.counts.failed,
            job.counts.pending) == (len(keys), len(keys), 0, 0)
    messages = [e.message for e in jobs.events(job.job_id, "0-0")]
    assert sorted(m.split()[1] for m in messages if m.startswith("image ")) == sorted(keys)
    assert sum(m.startswith("cohort succeeded") for m in messages) == 1
    folders: dict[str, list[str]] = defaultdict(list)
    for key in open_store(stack.settings()).list(f"jobs/{job.job_id}-"):
        folders[key.split("/")[1]].append(key.rsplit("/", 1)[-1])
    assert len(folders) == len(keys)
    assert [f for f, names in folders.items() if "manifest.json" not in names] == []


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [10, 60])
def test_triton_killed_and_back(stack: ServiceStack, stub: rpc.StyleProbeStub,
                                jobs: JobStore, triton: TritonProcess, outage_s: int) -> None:
    keys = upload(stack, f"inputs/triton-{outage_s}/", 8, seed=outage_s)
    # a direction not probed yet: the cohort's prepare calls Triton for a while
    probe = pb.ProbeOptions(samples=2000, seed=100 + outage_s)
    token = auth(stack.token)
    cohort = submit(stack, stub, keys, probe)
    explain = stub.Explain(explain_request(probe), metadata=token, timeout=30)
    with ThreadPoolExecutor(4) as pool:
        watching: dict[str, Future[list[pb.JobEvent]]] = {
            job.job_id: pool.submit(watch, stack, job.job_id) for job in (cohort, explain)}
        wait_for(lambda: jobs.get(cohort.job_id).state == "running", "the cohort running")
        killed_at = time.monotonic()
        assert triton.pid is not None
        os.kill(triton.pid, signal.SIGKILL)
        try:
            triton.stop()  # reaps it and its Python-backend stubs
            wait_for(lambda: not grpc_serving(stack.grpc_address), "health NOT_SERVING")
            with pytest.raises(grpc.RpcError) as refused:
                stub.Explain(explain_request(probe), metadata=token, timeout=30)
            time.sleep(max(0.0, killed_at + outage_s - time.monotonic()))
        finally:
            triton.start(timeout_s=300)
        back_at = time.monotonic()
        wait_for(lambda: grpc_serving(stack.grpc_address), "health SERVING again")
        after = stub.Explain(explain_request(probe), metadata=token, timeout=30)
        watching[after.job_id] = pool.submit(watch, stack, after.job_id)
        events = {job_id: future.result() for job_id, future in watching.items()}
    ended_at = time.monotonic()
    finals = {job_id: stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=token,
                                  timeout=30) for job_id in events}
    print(f"Triton down {back_at - killed_at:.0f} s (killed, {outage_s} s, restarted): "
          f"accepted jobs ended {ended_at - back_at:.0f} s after it was back")
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == REFUSED.format("triton")
    assert {j.state for j in finals.values()} == {pb.JOB_STATE_SUCCEEDED}, \
        [j.error for j in finals.values()]
    check_cohort(stack, jobs, finals[cohort.job_id], keys)
    paused = [m for job_id in (cohort.job_id, explain.job_id)
              for m in paused_messages(events[job_id])]
    assert paused and all(m.startswith("paused: Triton unreachable since ") for m in paused)
    assert paused_messages(events[after.job_id]) == []


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [10, 30])
def test_s3_down_mid_cohort(stack: ServiceStack, stub: rpc.StyleProbeStub, jobs: JobStore,
                            outage_s: int) -> None:
    keys = upload(stack, f"inputs/s3-{outage_s}/", 12, seed=outage_s)
    cohort = submit(stack, stub, keys)
    s3 = stack.s3
    assert s3 is not None
    with ThreadPoolExecutor(1) as pool:
        watching = pool.submit(watch, stack, cohort.job_id)
        wait_for(lambda: jobs.get(cohort.job_id).counts.get("done", 0) >= 1,
                 "the first image done")
        s3.kill()  # a crash: no graceful stop
        before = jobs.get(cohort.job_id).counts
        time.sleep(outage_s)
        s3.start(timeout_s=90)
        events = watching.result()
    final = stub.GetJob(pb.GetJobRequest(job_id=cohort.job_id), metadata=auth(stack.token),
                        timeout=30)
    print(f"S3 down {outage_s} s at {before.get('done', 0)} of {len(keys)} images: "
          f"{len(paused_messages(events))} pause(s)")
    assert before.get("done", 0) < len(keys)  # it really was mid-cohort
    check_cohort(stack, jobs, final, keys)
    paused = paused_messages(events)
    assert paused and all(m.startswith("paused: S3 unreachable since ") for m in paused)
    assert not jobs.redis.scard("styleprobe:cleanup:pending")


@pytest.mark.slow
def test_both_workers_killed_mid_cohort(stack: ServiceStack, stub: rpc.StyleProbeStub,
                                        jobs: JobStore) -> None:
    keys = upload(stack, "inputs/workers-killed/", 12, seed=12)
    cohort = submit(stack, stub, keys)
    wait_for(lambda: jobs.get(cohort.job_id).counts.get("done", 0) >= 1, "an image done")
    killed_at = time.monotonic()
    before = jobs.get(cohort.job_id).counts
    for worker in list(stack.workers.values()):
        worker.kill()  # SIGKILL to each worker's process group: main and pool processes
    replacements = [stack.launch_worker(name) for name in ("worker3", "worker4")]
    for worker in replacements:
        worker.wait_ready(timeout_s=180)
    started_at = time.monotonic()

    def succeeded() -> pb.Job | None:
        job = stub.GetJob(pb.GetJobRequest(job_id=cohort.job_id), metadata=auth(stack.token),
                          timeout=30)
        return job if job.state == pb.JOB_STATE_SUCCEEDED else None

    final = wait_for(succeeded, "the cohort to succeed", every_s=0.5)
    assert final is not None
    ended_at = time.monotonic()
    revived = sum(w.log_path.read_text().count("task of a dead worker handed out again")
                  for w in replacements)
    print(f"both workers killed at {before.get('done', 0)} of {len(keys)} images: new "
          f"workers ready after {started_at - killed_at:.0f} s, cohort ended "
          f"{ended_at - killed_at:.0f} s after the kill (visibility timeout "
          f"{VISIBILITY_S} s); {revived} task(s) handed out again by liveness")
    assert before.get("done", 0) < len(keys)
    assert revived >= 1
    check_cohort(stack, jobs, final, keys)


def test_a_cancelled_cohort_is_resumed_under_its_id(stack: ServiceStack,
                                                    stub: rpc.StyleProbeStub,
                                                    jobs: JobStore) -> None:
    keys = upload(stack, "inputs/resumed/", 12, seed=21)
    cohort = submit(stack, stub, keys)
    token = auth(stack.token)
    wait_for(lambda: jobs.get(cohort.job_id).counts.get("done", 0) >= 1, "an image done")
    stub.CancelJob(pb.CancelJobRequest(job_id=cohort.job_id), metadata=token, timeout=30)
    wait_for(lambda: stub.GetJob(pb.GetJobRequest(job_id=cohort.job_id), metadata=token,
                                 timeout=30).HasField("cohort"),
             "the summary of the cancelled cohort", every_s=0.5)
    store = open_store(stack.settings())
    rows = f"cohorts/{cohort.job_id}/done/"
    settled_at, kept = time.monotonic(), dict[str, float]()
    while time.monotonic() - settled_at < 5:  # a chunk finishes the image it was on, then stops
        now = {info.key: info.modified for info in store.list_info(rows)}
        if now != kept:
            settled_at, kept = time.monotonic(), now
        time.sleep(0.5)
    assert 1 <= len(kept) < len(keys)

    resumed = subprocess.run(
        [venv_program("styleprobe"), "cohort", "resume", cohort.job_id, "--watch",
         "--server", stack.grpc_address], capture_output=True, text=True, timeout=WAIT_S,
        env={**os.environ, "STYLEPROBE_TOKEN": stack.token})
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines()[0] == cohort.job_id
    assert "resumed: 12 images, those finished before are kept" in resumed.stderr
    messages = [e.message for e in jobs.events(cohort.job_id, "0-0")]
    assert f"cohort resumed: {len(kept)} of {len(keys)} images finished before are kept" \
        in messages
    final = stub.GetJob(pb.GetJobRequest(job_id=cohort.job_id), metadata=token, timeout=30)
    check_cohort(stack, jobs, final, keys)
    after = {info.key: info.modified for info in store.list_info(rows)}
    assert len(after) == len(keys)
    assert {key: after[key] for key in kept} == kept  # finished rows were not redone
    with pytest.raises(grpc.RpcError) as again:  # it has succeeded: nothing to resume
        stub.ResumeCohort(pb.ResumeCohortRequest(job_id=cohort.job_id), metadata=token,
                          timeout=30)
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
