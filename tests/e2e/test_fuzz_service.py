"""Fuzz against the running orchestrator: a few hundred generated requests (Explain,
SubmitCohort, GetDirection, GetJob, CancelJob). Every answer is a documented status; an
accepted job is cancelled at once; a refused request leaves no job record and no object."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import IMAGES, LAMBDAS, MODEL_SETS, OPTIONS, PROBE, TARGETS, TEXT, tally, unset_or
from styleprobe.api import pb, rpc
from styleprobe.jobs import PREFIX as JOB_PREFIX
from styleprobe.jobs import JobStore
from styleprobe.storage import open_store
from styleprobe.testing.stack import ServiceStack

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
DOCUMENTED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION"}
CALLS = st.one_of(
    st.tuples(st.just("Explain"), st.builds(
        pb.ExplainRequest, image_bytes=IMAGES, filename=TEXT, model_set=MODEL_SETS,
        target=TARGETS, lambdas=unset_or(LAMBDAS, ""), options=OPTIONS)),
    st.tuples(st.just("SubmitCohort"), st.builds(
        lambda keys, **fields: pb.SubmitCohortRequest(keys=pb.ObjectKeys(keys=keys), **fields),
        st.lists(TEXT, max_size=3), model_set=MODEL_SETS, target=TARGETS,
        lambdas=unset_or(LAMBDAS, ""), options=OPTIONS)),
    st.tuples(st.just("GetDirection"), st.builds(
        pb.GetDirectionRequest, key=TEXT, model_set=MODEL_SETS, probe=PROBE)),
    st.tuples(st.sampled_from(["GetJob", "CancelJob"]), st.builds(pb.GetJobRequest,
                                                                  job_id=TEXT)))


def job_ids(stack: ServiceStack) -> set[str]:
    """The ids of the job records in Redis."""
    jobs = JobStore(stack.settings().redis_url)
    try:
        keys = [key.decode() if isinstance(key, bytes) else key
                for key in jobs.redis.scan_iter(f"{JOB_PREFIX}*")]
    finally:
        jobs.close()
    return {key[len(JOB_PREFIX):] for key in keys if ":" not in key[len(JOB_PREFIX):]}


def test_fuzz_the_running_orchestrator(stack: ServiceStack, channel: grpc.Channel) -> None:
    stub = rpc.StyleProbeStub(channel)
    metadata = (("authorization", f"Bearer {stack.token}"),)
    store = open_store(stack.settings())
    records, objects = job_ids(stack), set(store.list())
    accepted: set[str] = set()

    @settings(max_examples=250, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(call=CALLS)
    def one(call: tuple[str, object]) -> None:
        method, request = call
        if method == "CancelJob":
            request = pb.CancelJobRequest(job_id=request.job_id)  # type: ignore[attr-defined]
        try:
            answer = getattr(stub, method)(request, metadata=metadata, timeout=30)
        except grpc.RpcError as exc:
            status = exc.code().name
            assert status in DOCUMENTED, (method, status, exc.details())
        else:
            status = "OK"
            if method in ("Explain", "SubmitCohort"):
                accepted.add(answer.job_id)
                stub.CancelJob(pb.CancelJobRequest(job_id=answer.job_id), metadata=metadata,
                               timeout=30)
        tally(f"orchestrator {method}", status)

    one()
    assert job_ids(stack) - records == accepted
    # an accepted job's objects, or a direction it probed before it was cancelled
    strays = [key for key in set(store.list()) - objects
              if key.split("/")[0] != "directions" and key.split("/")[1] not in accepted]
    assert not strays, strays[:5]
