"""The service end to end: a client made from the proto, on real Redis, S3, Triton,
the orchestrator and two Celery workers (see conftest.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from styleprobe.api import SERVICE_NAME, pb, rpc
from styleprobe.backends.local import LocalBackend
from styleprobe.data.knee import KneePhantoms
from styleprobe.explain.engine import DIRECTION_PROBED, Explainer
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.jobs import PREFIX as JOB_PREFIX
from styleprobe.jobs import JobStore
from styleprobe.storage import open_store
from styleprobe.storage.local import LocalStore
from styleprobe.testing.process import ServerProcess, venv_program
from styleprobe.testing.stack import ServiceStack
from styleprobe.worker.app import QUEUES

TINY = "tiny"
LAMBDAS = "-2:2:5"
PROBE = pb.ProbeOptions(samples=400, seed=3)
WAIT_S = 150.0


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def knee_png(size: int = 64) -> bytes:
    image = KneePhantoms(seed=7, size=size).sample(3).image[..., 0]
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def ct_small() -> bytes:
    return Path(get_testdata_file("CT_small.dcm")).read_bytes()


def watch(stub: rpc.StyleProbeStub, token: str, job_id: str) -> list[pb.JobEvent]:
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=auth(token),
                              timeout=WAIT_S))


def leftovers(stack: ServiceStack) -> tuple[list[str], int, dict[str, int]]:
    """What a request could leave behind: objects, job records, queued tasks."""
    settings = stack.settings()
    jobs = JobStore(settings.redis_url)
    try:
        records = sum(1 for _ in jobs.redis.scan_iter(f"{JOB_PREFIX}*"))
        queued = {q: jobs.redis.llen(q) for q in QUEUES}
    finally:
        jobs.close()
    return open_store(settings).list(), records, queued


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.StyleProbeStub:
    return rpc.StyleProbeStub(channel)


def test_grpcurl_lists_the_service_and_health_says_serving(stack: ServiceStack) -> None:
    grpcurl = venv_program("grpcurl")
    listed = subprocess.run([grpcurl, "-plaintext", stack.grpc_address, "list"],
                            capture_output=True, text=True, timeout=30, check=True).stdout
    assert SERVICE_NAME in listed.split()
    assert "grpc.health.v1.Health" in listed.split()
    described = subprocess.run([grpcurl, "-plaintext", stack.grpc_address, "describe",
                                SERVICE_NAME], capture_output=True, text=True, timeout=30,
                               check=True).stdout
    assert "rpc WatchJob" in described and "stream .styleprobe.v1.JobEvent" in described
    health = subprocess.run([grpcurl, "-plaintext", "-d", "{}", stack.grpc_address,
                             "grpc.health.v1.Health/Check"], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    assert json.loads(health) == {"status": "SERVING"}


def _embedded(repository: Path, tmp_path: Path, data: bytes, model_set: str,
              target: str) -> ExplanationResult:
    backend = LocalBackend(repository, model_set)
    spec = JobSpec.create(backend.model_set, target, LAMBDAS,
                          ProbeSettings(samples=PROBE.samples, seed=PROBE.seed))
    return Explainer(backend, LocalStore(tmp_path)).explain(data, spec)


@pytest.mark.parametrize("source", ["png", "dicom"])
def test_explain_through_the_service_equals_the_embedded_pipeline(
        stack: ServiceStack, stub: rpc.StyleProbeStub, explained_model_set: str,
        tmp_path: Path, source: str) -> None:
    model_set = explained_model_set
    data = knee_png() if source == "png" else ct_small()
    job = stub.Explain(pb.ExplainRequest(
        image_bytes=data, filename=f"input.{source}", model_set=model_set, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=PROBE)), metadata=auth(stack.token), timeout=30)
    assert job.state == pb.JOB_STATE_QUEUED and job.job_id

    events = watch(stub, stack.token, job.job_id)
    final = events[-1].job
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    stages = [e.job.stage for e in events]
    for stage in ("encode", "direction", "traverse", "render", "manifest"):
        assert stage in stages
    progress = [e.job.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert set(final.stage_seconds) == {"encode", "direction", "traverse", "attributes",
                                        "render", "manifest"}

    urls = {a.name: a.url for a in final.explanation.artifacts}
    with urllib.request.urlopen(urls["animation"], timeout=30) as response:
        gif = response.read()
        assert response.headers["Content-Type"] == "image/gif"
    assert gif.startswith(b"GIF8")
    with urllib.request.urlopen(final.explanation.manifest_url, timeout=30) as response:
        manifest = ExplanationResult.from_json(response.read())

    embedded = _embedded(stack.model_repository, tmp_path, data, model_set, final.target)
    assert manifest.job_id == job.job_id
    assert manifest.models == embedded.models
    assert manifest.input.sha256 == embedded.input.sha256
    assert manifest.direction.key == embedded.direction.key
    assert manifest.direction.auc == pytest.approx(embedded.direction.auc, abs=1e-6)
    assert manifest.lambdas == pytest.approx(embedded.lambdas)
    assert manifest.probabilities == pytest.approx(embedded.probabilities, abs=1e-5)
    assert manifest.prediction_input == pytest.approx(embedded.prediction_input, abs=1e-5)
    assert manifest.prediction_reconstruction == pytest.approx(
        embedded.prediction_reconstruction, abs=1e-5)
    assert manifest.quality.pixel_mse == pytest.approx(embedded.quality.pixel_mse, abs=1e-6)
    assert manifest.flip.found == embedded.flip.found
    assert list(final.explanation.probabilities) == pytest.approx(manifest.probabilities)

    direction = stub.GetDirection(pb.GetDirectionRequest(key=manifest.direction.key),
                                  metadata=auth(stack.token), timeout=10)
    assert direction.auc == pytest.approx(manifest.direction.auc)


def test_model_sets_are_listed(stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    answer = stub.ListModelSets(pb.ListModelSetsRequest(), metadata=auth(stack.token),
                                timeout=10)
    tiny = {m.name: m for m in answer.model_sets}[TINY]
    assert list(tiny.class_names) == ["healthy", "sick"] and tiny.resolution == 16
    assert list(tiny.nuisance_directions) == ["exposure", "rotation"]


def _bad_requests(stack: ServiceStack) -> list[tuple[str, pb.ExplainRequest, tuple, str, str]]:
    png = knee_png(16)
    ok = {"model_set": TINY, "lambdas": LAMBDAS}
    token = auth(stack.token)
    return [
        ("corrupt image", pb.ExplainRequest(image_bytes=png[:60], **ok), token,
         "INVALID_ARGUMENT", "image cannot be used"),
        ("no image", pb.ExplainRequest(**ok), token, "INVALID_ARGUMENT", "image is missing"),
        ("unknown model set", pb.ExplainRequest(image_bytes=png, model_set="nope"), token,
         "NOT_FOUND", "unknown model set 'nope'"),
        ("unknown target", pb.ExplainRequest(image_bytes=png, target="tumour", **ok), token,
         "INVALID_ARGUMENT", "healthy, sick"),
        ("malformed lambdas", pb.ExplainRequest(image_bytes=png, model_set=TINY,
                                                lambdas="3:-3:5"), token,
         "INVALID_ARGUMENT", "start must be less than stop"),
        ("unknown nuisance", pb.ExplainRequest(image_bytes=png, options=pb.ExplainOptions(
            orthogonalize=["age"]), **ok), token, "INVALID_ARGUMENT", "no nuisance direction"),
        ("unknown object", pb.ExplainRequest(image_key="inputs/missing.png", **ok), token,
         "NOT_FOUND", "no object"),
        ("oversize", pb.ExplainRequest(image_bytes=b"\0" * (17 << 20), **ok), token,
         "RESOURCE_EXHAUSTED", ""),
        ("no token", pb.ExplainRequest(image_bytes=png, **ok), (), "UNAUTHENTICATED",
         "missing token"),
        ("wrong token", pb.ExplainRequest(image_bytes=png, **ok), auth("not-the-token"),
         "UNAUTHENTICATED", "not valid"),
    ]


def test_bad_requests_are_refused_and_leave_nothing_behind(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    before = leftovers(stack)
    for name, request, metadata, code, words in _bad_requests(stack):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Explain(request, metadata=metadata, timeout=30)
        assert refused.value.code().name == code, name
        assert words in refused.value.details(), (name, refused.value.details())
    assert leftovers(stack) == before


def test_unknown_job_and_cancel_of_a_finished_job(stack: ServiceStack,
                                                  stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    for call in (stub.GetJob, stub.CancelJob):
        with pytest.raises(grpc.RpcError) as missing:
            call(pb.GetJobRequest(job_id="0" * 32) if call is stub.GetJob
                 else pb.CancelJobRequest(job_id="0" * 32), metadata=token, timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no job" in missing.value.details()
    with pytest.raises(grpc.RpcError) as missing:
        list(stub.WatchJob(pb.WatchJobRequest(job_id="0" * 32), metadata=token, timeout=10))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    job = stub.Explain(pb.ExplainRequest(image_bytes=knee_png(16), model_set=TINY,
                                         lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE)),
                       metadata=token, timeout=30)
    assert watch(stub, stack.token, job.job_id)[-1].job.state == pb.JOB_STATE_SUCCEEDED
    with pytest.raises(grpc.RpcError) as ended:
        stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=token, timeout=10)
    assert ended.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already succeeded" in ended.value.details()


def test_cancel_stops_the_chain_and_removes_its_files(stack: ServiceStack,
                                                      stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    job = stub.Explain(pb.ExplainRequest(
        image_bytes=knee_png(16), model_set=TINY, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=pb.ProbeOptions(samples=8000, seed=11))),
        metadata=token, timeout=30)
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=token,
                               timeout=WAIT_S):
        if event.job.stage == "direction":
            break
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=token,
                               timeout=10)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    store = open_store(stack.settings())
    deadline = time.monotonic() + WAIT_S
    while store.list(f"jobs/{job.job_id}/") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.list(f"jobs/{job.job_id}/") == []
    final = stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token, timeout=10)
    assert final.state == pb.JOB_STATE_CANCELLED and not final.HasField("explanation")


def test_concurrent_jobs_probe_a_shared_direction_once(stack: ServiceStack,
                                                       stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    probe = pb.ProbeOptions(samples=3000, seed=21)  # a direction no other test uses
    jobs = [stub.Explain(pb.ExplainRequest(image_bytes=knee_png(16), model_set=TINY,
                                           lambdas=LAMBDAS,
                                           options=pb.ExplainOptions(probe=probe)),
                         metadata=token, timeout=30) for _ in range(2)]
    histories: dict[str, list[pb.JobEvent]] = {}
    threads = [threading.Thread(target=lambda j=j: histories.__setitem__(
        j.job_id, watch(stub, stack.token, j.job_id))) for j in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    finals = [histories[j.job_id][-1].job for j in jobs]
    assert all(f.state == pb.JOB_STATE_SUCCEEDED for f in finals)
    assert finals[0].explanation.direction.key == finals[1].explanation.direction.key
    probed = [j.job_id for j in jobs
              if any(e.message == DIRECTION_PROBED for e in histories[j.job_id])]
    assert len(probed) == 1


def pool_processes(worker: ServerProcess) -> list[int]:
    """The pool processes of a Celery worker: the children of its main process."""
    children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def test_a_worker_killed_mid_job_the_job_still_completes_once(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    job = stub.Explain(pb.ExplainRequest(
        image_bytes=knee_png(16), model_set=TINY, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=pb.ProbeOptions(samples=8000, seed=5))),
        metadata=token, timeout=30)
    jobs = JobStore(stack.settings().redis_url)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        record = jobs.get(job.job_id)
        if record.stage == "direction" and record.progress > 0.2 and record.worker:
            break
        time.sleep(0.1)
    assert record.stage == "direction", record
    # SIGKILL to the process running the task, mid-probe (as the kernel's OOM killer does)
    for pid in pool_processes(stack.workers[record.worker]):
        os.kill(pid, signal.SIGKILL)

    watch(stub, stack.token, job.job_id)
    final = stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token, timeout=10)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    history = [e.message for e in jobs.events(job.job_id, "0-0")]
    jobs.close()
    assert history.count("stage direction started") == 2  # redelivered once
    assert history.count("job succeeded") == 1
    keys = open_store(stack.settings()).list(f"jobs/{job.job_id}/")
    assert [k for k in keys if k.endswith("manifest.json")] == [
        f"jobs/{job.job_id}/manifest.json"]


def test_job_records_survive_an_orchestrator_restart(stack: ServiceStack,
                                                     stub: rpc.StyleProbeStub) -> None:
    token = auth(stack.token)
    job = stub.Explain(pb.ExplainRequest(image_bytes=knee_png(16), model_set=TINY,
                                         lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE)),
                       metadata=token, timeout=30)
    before = watch(stub, stack.token, job.job_id)[-1].job
    stack.orchestrator.stop()
    stack.orchestrator = stack.orchestrator_process().start(timeout_s=180)
    with grpc.insecure_channel(stack.grpc_address) as chan:
        after = rpc.StyleProbeStub(chan).GetJob(pb.GetJobRequest(job_id=job.job_id),
                                                metadata=token, timeout=10)
    assert after.state == pb.JOB_STATE_SUCCEEDED
    assert after.explanation.manifest_key == before.explanation.manifest_key
    assert list(after.explanation.probabilities) == list(before.explanation.probabilities)


def test_client_explain_saves_the_report_and_its_parts(stack: ServiceStack,
                                                       tmp_path: Path) -> None:
    image = tmp_path / "knee.png"
    image.write_bytes(knee_png(16))
    done = subprocess.run(
        [venv_program("styleprobe"), "client", "explain", str(image), "--model-set", TINY,
         "--lambdas", LAMBDAS, "--server", stack.grpc_address, "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600, env={**os.environ,
                                                          "STYLEPROBE_TOKEN": stack.token})
    assert done.returncode == 0, done.stderr
    assert "100% job succeeded" in done.stderr
    saved = sorted(p.suffix for p in (tmp_path / "out").iterdir())
    assert saved == [".gif", ".html", ".json", ".png"]  # animation, report, manifest, strip
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["lambdas"]) == 5
