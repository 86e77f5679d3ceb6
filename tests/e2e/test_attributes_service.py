"""FindAttributes end to end: on real Redis, S3, Triton (serving the StyleSpace entry
points), the orchestrator and Celery workers (see conftest.py); the service's attributes
equal the embedded pipeline's, each with its strip, and bad options leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from test_service import LAMBDAS, PROBE, TINY, auth, knee_png, leftovers, watch

from styleprobe.api import pb, rpc
from styleprobe.backends.local import LocalBackend
from styleprobe.explain.engine import Explainer
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import AttributeSettings, JobSpec, ProbeSettings
from styleprobe.storage.local import LocalStore
from styleprobe.testing.process import venv_program
from styleprobe.testing.stack import ServiceStack

OPTIONS = pb.AttributeOptions(top=3, samples=2, shift=2.0, seed=4)


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.StyleProbeStub:
    return rpc.StyleProbeStub(channel)


def _request(attributes: pb.AttributeOptions = OPTIONS, model_set: str = TINY
             ) -> pb.FindAttributesRequest:
    return pb.FindAttributesRequest(
        explain=pb.ExplainRequest(image_bytes=knee_png(16), filename="knee.png",
                                  model_set=model_set, lambdas=LAMBDAS,
                                  options=pb.ExplainOptions(probe=PROBE)),
        attributes=attributes)


def test_find_attributes_through_the_service_equals_the_embedded_pipeline(
        stack: ServiceStack, stub: rpc.StyleProbeStub, tmp_path: Path) -> None:
    job = stub.FindAttributes(_request(), metadata=auth(stack.token), timeout=30)
    assert job.state == pb.JOB_STATE_QUEUED and job.kind == "explain"
    events = watch(stub, stack.token, job.job_id)
    final = events[-1].job
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    assert "attributes" in [e.job.stage for e in events]
    found = final.explanation.attributes
    assert [a.rank for a in found] == [1, 2, 3]

    artifacts = {a.name: a.url for a in final.explanation.artifacts}
    for attribute in found:
        assert len(attribute.lambdas) == len(attribute.probabilities) == 5
        with urllib.request.urlopen(artifacts[attribute.strip_artifact], timeout=30) as r:
            assert r.read().startswith(b"\x89PNG")
    with urllib.request.urlopen(artifacts["report"], timeout=30) as response:
        report = response.read().decode()
    assert report.count('alt="attribute ') == 3

    backend = LocalBackend(stack.model_repository, TINY)
    spec = JobSpec.create(backend.model_set, final.target, LAMBDAS,
                          ProbeSettings(samples=PROBE.samples, seed=PROBE.seed),
                          attributes=AttributeSettings(top=3, samples=2, shift=2.0, seed=4))
    embedded = Explainer(backend, LocalStore(tmp_path)).explain(knee_png(16), spec)
    with urllib.request.urlopen(final.explanation.manifest_url, timeout=30) as response:
        manifest = ExplanationResult.from_json(response.read())
    assert [a.name for a in manifest.attributes] == [a.name for a in embedded.attributes]
    assert [a.name for a in found] == [a.name for a in embedded.attributes]
    for served, local in zip(manifest.attributes, embedded.attributes, strict=True):
        assert served.probabilities == pytest.approx(local.probabilities, abs=1e-4)
        assert served.effect == pytest.approx(local.effect, abs=1e-4)
        assert (served.flip_lambda is None) == (local.flip_lambda is None)


@pytest.mark.parametrize("options,field", [
    (pb.AttributeOptions(top=21), "attributes.top"),
    (pb.AttributeOptions(samples=-1), "attributes.samples"),
    (pb.AttributeOptions(shift=float("nan")), "attributes.shift"),
    (pb.AttributeOptions(seed=-3), "attributes.seed"),
])
def test_bad_attribute_options_are_refused_and_leave_nothing_behind(
        stack: ServiceStack, stub: rpc.StyleProbeStub, options: pb.AttributeOptions,
        field: str) -> None:
    before = leftovers(stack)
    with pytest.raises(grpc.RpcError) as refused:
        stub.FindAttributes(_request(options), metadata=auth(stack.token), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(f"{field}:")
    assert leftovers(stack) == before


def test_find_attributes_needs_a_token(stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.FindAttributes(_request(), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_client_explain_with_attributes_saves_their_strips(stack: ServiceStack,
                                                           tmp_path: Path) -> None:
    image = tmp_path / "knee.png"
    image.write_bytes(knee_png(16))
    done = subprocess.run(
        [venv_program("styleprobe"), "client", "explain", str(image), "--model-set", TINY,
         "--lambdas", LAMBDAS, "--attributes", "2", "--server", stack.grpc_address,
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "STYLEPROBE_TOKEN": stack.token})
    assert done.returncode == 0, done.stderr
    assert [line.split(":")[0] for line in done.stdout.splitlines()
            if line.startswith("attribute ")] == ["attribute 1", "attribute 2"]
    saved = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert {"attribute_01.png", "attribute_02.png", "report.html"} <= set(saved)
