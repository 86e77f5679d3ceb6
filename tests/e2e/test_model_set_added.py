"""A model set added to the model repository while the service runs: the orchestrator lists
it, Triton loads it (explicit model control), a job explains with it, and jobs on an
existing set run through the load without an error; nothing is restarted."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from styleprobe.api import pb, rpc
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.stack import ServiceStack
from styleprobe.testing.triton import add_classifier_copy

TINY, ADDED = "tiny", "tiny-added"
SERVED_WITHIN_S = 300.0
WAIT_S = 150.0


@pytest.fixture()
def stub(channel: grpc.Channel) -> Iterator[rpc.StyleProbeStub]:
    yield rpc.StyleProbeStub(channel)


def grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, format="PNG")
    return buffer.getvalue()


def explain(stub: rpc.StyleProbeStub, token: str, model_set: str) -> pb.Job:
    """One job on ``model_set`` (a flat grey 16x16 image), to its end."""
    metadata = (("authorization", f"Bearer {token}"),)
    job = stub.Explain(pb.ExplainRequest(
        image_bytes=grey_png(), filename="input.png", model_set=model_set,
        lambdas="-2:2:5", options=pb.ExplainOptions(probe=pb.ProbeOptions(samples=400, seed=3))),
        metadata=metadata, timeout=30)
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=metadata,
                                timeout=WAIT_S))
    return events[-1].job


def listed(stub: rpc.StyleProbeStub, token: str) -> list[str]:
    answer = stub.ListModelSets(pb.ListModelSetsRequest(),
                                metadata=(("authorization", f"Bearer {token}"),), timeout=10)
    return [m.name for m in answer.model_sets]


def test_a_set_added_while_the_service_runs_is_served(
        stack: ServiceStack, stub: rpc.StyleProbeStub, triton: TritonProcess) -> None:
    assert ADDED not in listed(stub, stack.token)
    reference = explain(stub, stack.token, TINY)
    assert reference.state == pb.JOB_STATE_SUCCEEDED, reference.error
    finals: list[pb.Job] = []
    stop = threading.Event()

    def explain_existing() -> None:  # jobs on the existing set, all through the load
        while not stop.is_set():
            finals.append(explain(stub, stack.token, TINY))

    busy = threading.Thread(target=explain_existing)
    busy.start()
    try:
        started = time.monotonic()
        add_classifier_copy(stack.model_repository, TINY, ADDED)
        assert ADDED in listed(stub, stack.token)
        client = grpcclient.InferenceServerClient(triton.grpc_url)
        while not client.is_model_ready(f"{ADDED}-decode"):
            assert time.monotonic() - started < SERVED_WITHIN_S, f"{ADDED} was not loaded"
            time.sleep(0.2)
        served_after_s = time.monotonic() - started
        client.close()
        added = explain(stub, stack.token, ADDED)
    finally:
        stop.set()
        busy.join()
    print(f"{ADDED} served {served_after_s:.1f} s after its manifest appeared; "
          f"{len(finals)} jobs on {TINY} meanwhile")
    assert added.state == pb.JOB_STATE_SUCCEEDED, added.error
    assert added.model_set == ADDED
    # The same generator, encoder and classifier weights: the same prediction.
    assert list(added.explanation.probabilities) == pytest.approx(
        list(reference.explanation.probabilities), abs=1e-5)
    assert finals and all(f.state == pb.JOB_STATE_SUCCEEDED for f in finals), [
        f.error for f in finals if f.state != pb.JOB_STATE_SUCCEEDED]
