"""Fuzz, in process: generated Explain, SubmitCohort and GetDirection requests through the
service's checks (with the job store and the queue replaced by doubles), generated and
mutated image files through the codecs, random λ grids. Every case is accepted or refused
with a documented status; a refused one stores and queues nothing; nothing else raises."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import IMAGES, LAMBDAS, MODEL_SETS, OPTIONS, PROBE, TARGETS, TEXT, tally, unset_or
from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.data.codecs import ImageDecodeError, InputLimits, decode
from styleprobe.explain.spec import JobSpec, LambdaGrid, LambdaSpecError
from styleprobe.jobs import JobRecord
from styleprobe.orchestrator import cohorts, service
from styleprobe.orchestrator.requests import RequestError
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on broken files
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REFUSALS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
LIMITS = InputLimits(max_pixels=1_000_000, max_frames=8)

EXPLAIN = st.builds(
    pb.ExplainRequest, image_bytes=IMAGES, filename=TEXT, model_set=MODEL_SETS,
    target=TARGETS, lambdas=unset_or(LAMBDAS, ""), options=OPTIONS)
BY_KEY = st.builds(pb.ExplainRequest, image_key=TEXT, model_set=MODEL_SETS, options=OPTIONS)
IMAGE_LISTS = st.one_of(
    st.builds(lambda prefix: {"prefix": prefix}, TEXT),
    st.builds(lambda keys: {"keys": pb.ObjectKeys(keys=keys)}, st.lists(TEXT, max_size=4)),
    st.builds(lambda images: {"inline": pb.InlineImages(images=images)}, st.lists(
        st.builds(pb.InlineImage, data=st.binary(max_size=64), filename=TEXT), max_size=4)),
    st.just({}))
COHORT = st.builds(lambda images, **fields: pb.SubmitCohortRequest(**images, **fields),
                   IMAGE_LISTS, model_set=MODEL_SETS, target=TARGETS,
                   lambdas=unset_or(LAMBDAS, ""), options=OPTIONS)
DIRECTION = st.builds(pb.GetDirectionRequest, key=st.one_of(st.just(""), TEXT),
                      model_set=MODEL_SETS, target=TARGETS,
                      orthogonalize=st.lists(TEXT, max_size=2), probe=PROBE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("fuzz-store"))
    store.put("inputs/a.png", b"not an image")  # a key the requests may name
    return store


@pytest.fixture(scope="module")
def servicer(tiny_repository: Path, store: LocalStore) -> StyleProbeService:
    """The servicer on the tiny set, its job store a double that records what it creates."""
    jobs = mock.Mock()
    jobs.create.side_effect = lambda job_id, kind, request, total=1, **fields: JobRecord(
        job_id=job_id, kind=kind, state="queued", request=request, counts={"total": total},
        **fields)
    return StyleProbeService(Settings(model_repository=str(tiny_repository), probe_samples=400),
                             store, jobs)


def outcome(suite: str, servicer: StyleProbeService, store: LocalStore,
            call: mock.Mock, work: object) -> None:
    """Run ``work``; a refusal must carry a documented status and leave nothing behind,
    an acceptance a job whose spec checks again."""
    assert callable(work)
    before, created = store.list(), servicer.jobs.create.call_count  # type: ignore[attr-defined]
    queued = call.call_count
    try:
        job = work()
    except RequestError as exc:
        assert exc.code in REFUSALS, (exc.code, exc)
        assert str(exc)
        assert store.list() == before
        assert servicer.jobs.create.call_count == created  # type: ignore[attr-defined]
        assert call.call_count == queued
        tally(suite, exc.code.name)
        return
    if isinstance(job, pb.Job):
        spec = servicer.jobs.create.call_args.args[2].spec  # type: ignore[attr-defined]
        assert JobSpec.from_dict(spec.to_dict()) == spec
        assert np.isfinite(spec.lambdas.values()).all()
        for key in set(store.list()) - set(before):  # what the accepted job stored
            store.delete(key)
    tally(suite, "OK")


@FUZZ
@given(request=st.one_of(EXPLAIN, BY_KEY))
def test_fuzz_explain(servicer: StyleProbeService, store: LocalStore,
                      request: pb.ExplainRequest) -> None:
    context = mock.Mock(time_remaining=lambda: None)
    with mock.patch.object(service, "explain_chain") as chain:
        outcome("in-process Explain", servicer, store, chain,
                lambda: servicer._explain(request, context))


@FUZZ
@given(request=COHORT)
def test_fuzz_submit_cohort(servicer: StyleProbeService, store: LocalStore,
                            request: pb.SubmitCohortRequest) -> None:
    with mock.patch.object(cohorts, "cohort_task") as task:
        outcome("in-process SubmitCohort", servicer, store, task,
                lambda: servicer._submit_cohort(request))


@FUZZ
@given(request=DIRECTION)
def test_fuzz_get_direction(servicer: StyleProbeService, store: LocalStore,
                            request: pb.GetDirectionRequest) -> None:
    outcome("in-process GetDirection", servicer, store, mock.Mock(),
            lambda: servicer._get_direction(request))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=IMAGES)
def test_fuzz_codecs(data: bytes) -> None:
    try:
        decoded = decode(data, "fuzz", LIMITS)
    except ImageDecodeError as exc:
        assert str(exc)
        tally("codecs", "refused (ImageDecodeError)")
        return
    pixels = decoded.pixels
    assert pixels.ndim == 3 and pixels.shape[2] in (1, 3)
    assert pixels.shape[0] * pixels.shape[1] <= LIMITS.max_pixels
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() <= 1
    tally("codecs", "decoded")


@settings(max_examples=400, deadline=None)
@given(text=LAMBDAS)
def test_fuzz_lambda_grids(text: str) -> None:
    try:
        grid = LambdaGrid.parse(text)
    except LambdaSpecError as exc:
        assert str(exc)
        tally("λ grids", "refused (LambdaSpecError)")
        return
    values = grid.values()
    assert np.isfinite(values).all() and len(values) == grid.steps
    assert abs(values).max() <= LambdaGrid.MAX_ABS
    tally("λ grids", "parsed")
