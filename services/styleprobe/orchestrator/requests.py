"""Checking API requests completely before anything is stored or queued.

Every check raises :class:`RequestError` with the gRPC status a client should see and a
message a person can act on: INVALID_ARGUMENT for what is wrong in the request itself,
NOT_FOUND for a model set or object that does not exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from styleprobe.api import pb
from styleprobe.data.codecs import ImageDecodeError
from styleprobe.explain.direction import DirectionError, ProbeSettings, check_nuisance_names
from styleprobe.explain.inputs import ModelInput, load_input
from styleprobe.explain.lambdas import DEFAULT_LAMBDAS, LambdaSpecError, parse_lambdas
from styleprobe.modelset import ModelSet, ModelSetError, list_model_sets, load_model_set
from styleprobe.storage import ArtifactStore, ObjectNotFound, StoreError
from styleprobe.storage.local import validate_key

MAX_PROBE_SAMPLES = 100_000
SEARCH_ROUNDS, SEARCH_POINTS = 3, 8  # defaults of the counterfactual search
MAX_SEARCH_ROUNDS, MAX_SEARCH_POINTS = 10, 64


class RequestError(Exception):
    """A request that cannot be served as it is; ``code`` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclass
class JobSettings:
    """The checked settings every image of a job shares (Explain and SubmitCohort)."""

    model_set: str
    target: str
    lambdas: str
    probe: ProbeSettings
    orthogonalize: list[str]
    search_rounds: int
    search_points: int

    def record(self) -> dict[str, Any]:
        """The settings as the workers read them from the job record."""
        return {"model_set": self.model_set, "target": self.target, "lambdas": self.lambdas,
                "probe": asdict(self.probe), "orthogonalize": self.orthogonalize,
                "search_rounds": self.search_rounds, "search_points": self.search_points}


@dataclass
class ExplainJob(JobSettings):
    """A checked Explain request: what the workers need, and the decoded input."""

    image: ModelInput

    def job_request(self, input_key: str) -> dict[str, Any]:
        """The job's request as the workers read it from the job record."""
        return {**self.record(), "input_key": input_key}


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


def target_of(model_set: ModelSet, target: str) -> str:
    """``target``, or the default target; INVALID_ARGUMENT naming the classes."""
    target = target or model_set.default_target
    try:
        model_set.classifier.class_index(target)
    except ModelSetError as exc:
        raise invalid(str(exc)) from exc
    return target


def probe_settings(options: pb.ProbeOptions, default_samples: int) -> ProbeSettings:
    """The probe options with the server's defaults for unset (zero) fields."""
    samples = options.samples or default_samples
    if not 0 < samples <= MAX_PROBE_SAMPLES:
        raise invalid(f"probe samples must lie in 20..{MAX_PROBE_SAMPLES}, got {samples}")
    defaults = ProbeSettings()
    try:
        return ProbeSettings(
            samples=samples, seed=options.seed,
            truncation_psi=options.truncation_psi or defaults.truncation_psi,
            test_fraction=options.test_fraction or defaults.test_fraction,
            regularization=options.regularization or defaults.regularization)
    except DirectionError as exc:
        raise invalid(str(exc)) from exc


def nuisance_names(model_set: ModelSet, names: list[str]) -> list[str]:
    try:
        return check_nuisance_names(model_set, list(names))
    except DirectionError as exc:
        raise invalid(str(exc)) from exc


def _search(value: int, default: int, low: int, high: int, name: str) -> int:
    value = value or default
    if not low <= value <= high:
        raise invalid(f"{name} must lie in {low}..{high}, got {value}")
    return value


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


def check_settings(request: pb.ExplainRequest | pb.SubmitCohortRequest, repository: Path,
                   default_samples: int) -> tuple[ModelSet, JobSettings]:
    """Check the model set, target, λ grid and options of a request; the model set too."""
    model_set = model_set_named(repository, request.model_set)
    target = target_of(model_set, request.target)
    lambdas = request.lambdas or DEFAULT_LAMBDAS
    try:
        parse_lambdas(lambdas)
    except LambdaSpecError as exc:
        raise invalid(str(exc)) from exc
    options = request.options
    probe = probe_settings(options.probe, default_samples)
    names = nuisance_names(model_set, list(options.orthogonalize))
    rounds = _search(options.search_rounds, SEARCH_ROUNDS, 1, MAX_SEARCH_ROUNDS, "search_rounds")
    points = _search(options.search_points, SEARCH_POINTS, 2, MAX_SEARCH_POINTS, "search_points")
    return model_set, JobSettings(model_set=model_set.name, target=target, lambdas=lambdas,
                                  probe=probe, orthogonalize=names, search_rounds=rounds,
                                  search_points=points)


def check_explain(request: pb.ExplainRequest, repository: Path, store: ArtifactStore,
                  default_samples: int) -> ExplainJob:
    """Check every field of an Explain request, decoding the image last (the costliest)."""
    model_set, settings = check_settings(request, repository, default_samples)
    data = image_bytes(request, store)
    name = request.filename or request.image_key or "image"
    try:
        image = load_input(data, model_set.preprocessing, name)
    except ImageDecodeError as exc:
        raise invalid(f"the image cannot be used: {exc}") from exc
    return ExplainJob(**vars(settings), image=image)
