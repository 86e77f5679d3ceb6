"""Checking API requests completely before anything is stored or queued.

Every check raises :class:`RequestError` with the gRPC status a client should see and a
message a person can act on: INVALID_ARGUMENT for what is wrong in the request itself,
NOT_FOUND for a model set or object that does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import grpc

from styleprobe.api import pb
from styleprobe.data.codecs import ImageDecodeError
from styleprobe.explain.inputs import ModelInput, load_input
from styleprobe.explain.spec import JobSpec, JobSpecError, ProbeSettings, SearchSettings
from styleprobe.modelset import ModelSet, ModelSetError, list_model_sets, load_model_set
from styleprobe.storage import ArtifactStore, ObjectNotFound, StoreError, validate_key


class RequestError(Exception):
    """A request that cannot be served as it is; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class ExplainJob:
    """A checked Explain request: the job's spec and the decoded input."""

    spec: JobSpec
    image: ModelInput


def model_set_named(repository: Path, name: str) -> ModelSet:
    """The model set ``name`` of ``repository``; NOT_FOUND listing the known ones."""
    if not name:
        raise invalid("model_set is required (ListModelSets names the ones served)")
    known = list_model_sets(repository)
    if name not in known:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"unknown model set {name!r}; this server has: "
                           f"{', '.join(known) or 'none'}")
    try:
        return load_model_set(repository, name)
    except ModelSetError as exc:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"model set {name!r} is broken on this server: {exc}") from exc


PROBE_FIELDS = frozenset(f.name for f in fields(ProbeSettings))


def field_error(exc: JobSpecError, options: str) -> RequestError:
    """INVALID_ARGUMENT naming the request field at fault: ``options`` is the path of the
    request's ExplainOptions (``options.``), or empty where its fields are top-level."""
    setting = exc.setting
    if setting in PROBE_FIELDS:
        setting = f"{options}probe.{setting}"
    elif setting not in ("lambdas", "target"):
        setting = f"{options}{setting}"
    return invalid(f"{setting}: {exc}")


def spec_of(model_set: ModelSet, target: str, orthogonalize: list[str],
            probe: pb.ProbeOptions, default_samples: int, options: str,
            lambdas: str = "", rounds: int = 0, points: int = 0) -> JobSpec:
    """A job spec from request fields, checked against ``model_set``; unset (empty, zero)
    fields take the defaults (the server's ``default_samples``); an error names the field
    (the ExplainOptions' fields under ``options``, see :func:`field_error`)."""
    defaults, search = ProbeSettings(), SearchSettings()
    try:
        return JobSpec.create(
            model_set, target, lambdas or None,
            ProbeSettings(
                samples=probe.samples or default_samples, seed=probe.seed,
                truncation_psi=probe.truncation_psi or defaults.truncation_psi,
                test_fraction=probe.test_fraction or defaults.test_fraction,
                regularization=probe.regularization or defaults.regularization),
            SearchSettings(rounds or search.rounds, points or search.points),
            orthogonalize)
    except JobSpecError as exc:
        raise field_error(exc, options) from exc


def job_spec(model_set: ModelSet, request: pb.ExplainRequest | pb.SubmitCohortRequest,
             default_samples: int) -> JobSpec:
    """The request's job spec, checked against ``model_set`` (unset fields: defaults)."""
    options = request.options
    return spec_of(model_set, request.target, list(options.orthogonalize), options.probe,
                   default_samples, "options.", request.lambdas, options.search_rounds,
                   options.search_points)


def image_bytes(request: pb.ExplainRequest, store: ArtifactStore) -> bytes:
    """The image's bytes, inline or read from the store."""
    which = request.WhichOneof("image")
    if which is None:
        raise invalid("the image is missing: set image_bytes (the file's bytes) or image_key "
                      "(an object in the server's bucket)")
    if which == "image_bytes":
        if not request.image_bytes:
            raise invalid("image_bytes is empty")
        return request.image_bytes
    try:
        key = validate_key(request.image_key)
    except StoreError as exc:
        raise invalid(str(exc)) from exc
    try:
        return store.get(key)
    except ObjectNotFound as exc:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"no object {key!r} in the bucket") from exc
    except StoreError as exc:
        raise RequestError(grpc.StatusCode.UNAVAILABLE,
                           f"the object store cannot be read: {exc}") from exc


def check_explain(request: pb.ExplainRequest, repository: Path, store: ArtifactStore,
                  default_samples: int) -> ExplainJob:
    """Check every field of an Explain request, decoding the image last (the costliest)."""
    model_set = model_set_named(repository, request.model_set)
    spec = job_spec(model_set, request, default_samples)
    data = image_bytes(request, store)
    name = request.filename or request.image_key or "image"
    try:
        image = load_input(data, model_set.preprocessing, name)
    except ImageDecodeError as exc:
        raise invalid(f"the image cannot be used: {exc}") from exc
    return ExplainJob(spec=spec, image=image)
