"""The specification of one explanation job, typed, with its defaults in one place.

A :class:`JobSpec` is everything that decides an explanation besides the image: the model
set, the target class, the λ grid (:class:`LambdaGrid`), how the direction is probed
(:class:`ProbeSettings`), how the counterfactual search refines the flip
(:class:`SearchSettings`) and the nuisance directions the target direction is made
orthogonal to. It is checked where it enters (the CLI, a gRPC request, a cohort record:
:meth:`JobSpec.create`), then passed as it is; it crosses process boundaries (Redis,
Celery, the cohort record) only as :meth:`JobSpec.to_dict` / :meth:`JobSpec.from_dict`.
Every check raises :class:`JobSpecError` with a message a person can act on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from styleprobe.modelset import ModelSet, ModelSetError


class JobSpecError(ValueError):
    """A job specification is malformed, out of range, or does not fit its model set;
    ``setting`` names the setting at fault (``lambdas``, ``target``, ``orthogonalize``,
    ``search_rounds``, ``search_points`` or a :class:`ProbeSettings` field), if one is."""

    def __init__(self, message: str, setting: str = "") -> None:
        super().__init__(message)
        self.setting = setting


class LambdaSpecError(JobSpecError):
    """A λ grid specification is malformed or out of range."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "lambdas")


@dataclass(frozen=True)
class LambdaGrid:
    """``steps`` evenly spaced values from ``start`` to ``stop``, both included; written
    ``start:stop:steps``.

    The default, ``-4:4:17`` (steps of 0.5 along the unit direction), reaches the flip of
    all 40 held-out diseased knee phantoms measured on the bundled ``knee-oa`` set, where
    ``-3:3`` missed 3 of them (the most severe need λ ≈ -3.5).
    """

    start: float = -4.0
    stop: float = 4.0
    steps: int = 17

    MIN_STEPS = 2
    MAX_STEPS = 257
    MAX_ABS = 100.0  # λ counts units of the probe latents' spread: far beyond any flip

    def __post_init__(self) -> None:
        if not (abs(self.start) <= self.MAX_ABS and abs(self.stop) <= self.MAX_ABS):
            raise LambdaSpecError(f"λ grid {self}: start and stop must be finite numbers "
                                  f"in [-{self.MAX_ABS:g}, {self.MAX_ABS:g}]")
        if not self.start < self.stop:
            raise LambdaSpecError(f"λ grid {self}: start must be less than stop")
        if not self.MIN_STEPS <= self.steps <= self.MAX_STEPS:
            raise LambdaSpecError(
                f"λ grid {self}: steps must lie in {self.MIN_STEPS}..{self.MAX_STEPS}")

    def __str__(self) -> str:
        return f"{self.start:g}:{self.stop:g}:{self.steps}"

    def values(self) -> np.ndarray:
        return np.linspace(self.start, self.stop, self.steps)

    @classmethod
    def parse(cls, spec: str) -> LambdaGrid:
        """Parse ``start:stop:steps``; :class:`LambdaSpecError` saying what is wrong."""
        parts = str(spec).strip().split(":")
        if len(parts) != 3:
            raise LambdaSpecError(f"λ grid {spec!r} must be start:stop:steps, e.g. {cls()}")
        try:
            start, stop = float(parts[0]), float(parts[1])
        except ValueError:
            raise LambdaSpecError(f"λ grid {spec!r}: start and stop must be numbers") from None
        try:
            steps = int(parts[2])
        except ValueError:
            raise LambdaSpecError(f"λ grid {spec!r}: steps must be a whole number") from None
        return cls(start, stop, steps)


MIN_PER_CLASS = 5  # fewest probe samples of each side needed in the train and the test split


@dataclass(frozen=True)
class ProbeSettings:
    """What determines a probed direction, apart from the models and the target."""

    samples: int = 10_000
    seed: int = 0
    truncation_psi: float = 1.0
    test_fraction: float = 0.2
    regularization: float = 1.0  # inverse strength C of the logistic regression

    MIN_SAMPLES = 4 * MIN_PER_CLASS
    MAX_SAMPLES = 100_000
    MAX_SEED = 2**31 - 1
    MIN_REGULARIZATION, MAX_REGULARIZATION = 1e-6, 1e6

    def __post_init__(self) -> None:
        # each comparison is false for NaN, so NaN is refused with the range
        if not self.MIN_SAMPLES <= self.samples <= self.MAX_SAMPLES:
            raise JobSpecError(f"probe samples must lie in {self.MIN_SAMPLES}.."
                               f"{self.MAX_SAMPLES}, got {self.samples}", "samples")
        if not 0 <= self.seed <= self.MAX_SEED:
            raise JobSpecError(f"probe seed must lie in 0..{self.MAX_SEED}, got {self.seed}",
                               "seed")
        if not 0.0 < self.truncation_psi <= 1.0:
            raise JobSpecError(f"truncation psi must lie in (0, 1], got {self.truncation_psi}",
                               "truncation_psi")
        if not 0.05 <= self.test_fraction <= 0.5:
            raise JobSpecError(f"test fraction must lie in [0.05, 0.5], got "
                               f"{self.test_fraction}", "test_fraction")
        if not self.MIN_REGULARIZATION <= self.regularization <= self.MAX_REGULARIZATION:
            raise JobSpecError(f"regularization must lie in [{self.MIN_REGULARIZATION:g}, "
                               f"{self.MAX_REGULARIZATION:g}], got {self.regularization}",
                               "regularization")


@dataclass(frozen=True)
class SearchSettings:
    """The counterfactual search: ``rounds`` batched k-section calls of ``points`` λ values
    each, narrowing the flip's bracket by ``(points + 1) ** rounds``."""

    rounds: int = 3
    points: int = 8

    MAX_ROUNDS = 10
    MIN_POINTS, MAX_POINTS = 2, 64

    def __post_init__(self) -> None:
        if not 1 <= self.rounds <= self.MAX_ROUNDS:
            raise JobSpecError(f"search rounds must lie in 1..{self.MAX_ROUNDS}, "
                               f"got {self.rounds}", "search_rounds")
        if not self.MIN_POINTS <= self.points <= self.MAX_POINTS:
            raise JobSpecError(f"search points must lie in {self.MIN_POINTS}.."
                               f"{self.MAX_POINTS}, got {self.points}", "search_points")


@dataclass(frozen=True)
class AttributeSettings:
    """Attribute discovery (AttFind over the generator's StyleSpace,
    :mod:`styleprobe.explain.attributes`): the ``top`` attributes, ranked over ``samples``
    generated images (seeded by ``seed``), each style channel moved by ``shift`` of its
    standard deviation over generated images."""

    top: int = 5
    samples: int = 8
    shift: float = 3.0
    seed: int = 0

    MAX_TOP = 20
    MAX_SAMPLES = 256
    MAX_SHIFT = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.top <= self.MAX_TOP:
            raise JobSpecError(f"attributes must lie in 1..{self.MAX_TOP}, got {self.top}",
                               "top")
        if not 1 <= self.samples <= self.MAX_SAMPLES:
            raise JobSpecError(f"attribute samples must lie in 1..{self.MAX_SAMPLES}, got "
                               f"{self.samples}", "attribute_samples")
        if not 0.1 <= self.shift <= self.MAX_SHIFT:
            raise JobSpecError(f"attribute shift must lie in [0.1, {self.MAX_SHIFT:g}] standard "
                               f"deviations, got {self.shift}", "shift")
        if not 0 <= self.seed <= ProbeSettings.MAX_SEED:
            raise JobSpecError(f"attribute seed must lie in 0..{ProbeSettings.MAX_SEED}, got "
                               f"{self.seed}", "attribute_seed")


def nuisance_names(model_set: ModelSet, names: tuple[str, ...] | list[str]) -> list[str]:
    """The names, sorted and unique, if the model set has a nuisance direction for each."""
    unknown = [name for name in names if name not in model_set.nuisance_directions]
    if unknown:
        known = ", ".join(sorted(model_set.nuisance_directions)) or "none"
        raise JobSpecError(f"model set {model_set.name!r} has no nuisance direction "
                           f"{', '.join(unknown)} (it has: {known})", "orthogonalize")
    return sorted(set(names))


@dataclass(frozen=True)
class JobSpec:
    """Everything that decides one explanation besides the image. Build it checked with
    :meth:`create`; ``orthogonalize`` is sorted and unique."""

    model_set: str
    target: str
    lambdas: LambdaGrid = field(default_factory=LambdaGrid)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    orthogonalize: tuple[str, ...] = ()
    attributes: AttributeSettings | None = None  # None: no attribute discovery

    @classmethod
    def create(cls, model_set: ModelSet, target: str | None = None,
               lambdas: LambdaGrid | str | None = None, probe: ProbeSettings | None = None,
               search: SearchSettings | None = None,
               orthogonalize: tuple[str, ...] | list[str] = (),
               attributes: AttributeSettings | None = None) -> JobSpec:
        """A spec for ``model_set``, checked against it: the target (default: the model
        set's) is one of its classes, every nuisance direction is one it has, and a set
        asked for attributes exports its StyleSpace."""
        target = target or model_set.default_target
        try:
            model_set.classifier.class_index(target)
        except ModelSetError as exc:
            raise JobSpecError(str(exc), "target") from exc
        names = nuisance_names(model_set, orthogonalize)
        if attributes is not None and not model_set.has_stylespace:
            raise JobSpecError(f"model set {model_set.name!r} exports no StyleSpace, so no "
                               "attributes can be found (add it without retraining: "
                               "scripts/stylespace_from_model_set.py)", "attributes")
        if isinstance(lambdas, str):
            lambdas = LambdaGrid.parse(lambdas)
        return cls(model_set=model_set.name, target=target, lambdas=lambdas or LambdaGrid(),
                   probe=probe or ProbeSettings(), search=search or SearchSettings(),
                   orthogonalize=tuple(names), attributes=attributes)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (the λ grid as ``start:stop:steps``; attribute
        settings only when asked for)."""
        raw = {"model_set": self.model_set, "target": self.target,
               "lambdas": str(self.lambdas), "probe": asdict(self.probe),
               "search": asdict(self.search), "orthogonalize": list(self.orthogonalize)}
        return raw | ({"attributes": asdict(self.attributes)} if self.attributes else {})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobSpec:
        """The spec written by :meth:`to_dict` (checked again)."""
        try:
            return cls(model_set=raw["model_set"], target=raw["target"],
                       lambdas=LambdaGrid.parse(raw["lambdas"]),
                       probe=ProbeSettings(**raw["probe"]),
                       search=SearchSettings(**raw["search"]),
                       orthogonalize=tuple(raw["orthogonalize"]),
                       attributes=(AttributeSettings(**raw["attributes"])
                                   if raw.get("attributes") else None))
        except (KeyError, TypeError) as exc:
            raise JobSpecError(f"malformed job specification: {exc}") from exc
