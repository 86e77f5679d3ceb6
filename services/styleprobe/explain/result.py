"""The typed result of an explanation and its JSON form, ``manifest.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from styleprobe.explain.quality import Quality

MANIFEST_SCHEMA_VERSION = 1


@dataclass
class InputInfo:
    """What was explained: the hash of the input's bytes and safe metadata."""

    sha256: str
    description: dict[str, Any]


@dataclass
class DirectionInfo:
    """The direction used: its store key and how well it separates the target."""

    key: str
    auc: float
    accuracy: float
    auc_unconstrained: float
    samples: int
    positive_share: float
    latent_std: float
    probe: dict[str, Any]
    orthogonalized_against: dict[str, float] = field(default_factory=dict)


@dataclass
class FlipInfo:
    """The counterfactual search: the smallest ``|λ|`` that flips the prediction, if any."""

    found: bool
    side: str  # "negative" or "positive" λ: the side towards the other class
    limit: float  # the farthest λ searched on that side (0 when the grid has none there)
    at_lambda: float | None = None
    probability: float | None = None
    bracket: list[float] | None = None


@dataclass
class AttributeInfo:
    """One discovered StyleSpace attribute (:mod:`styleprobe.explain.attributes`) and its
    traversal of this image: λ in units of the channel's spread, +λ raising the target."""

    rank: int
    name: str  # ``b<res>.conv<k>#<channel>``
    channel: int  # index into the StyleSpace vector
    sign: float
    sigma: float
    ranking_effect: float  # mean log-odds change towards the other class over the samples
    ranking_flip_share: float  # share of the ranked samples one move flipped
    lambdas: list[float]
    probabilities: list[float]
    flip_lambda: float | None  # where this image's prediction flips, towards the other class
    effect: float  # P(target) at the largest λ minus at the smallest


@dataclass
class ExplanationResult:
    """Every number of one explanation, the model versions used, and the output keys."""

    job_id: str
    model_set: str
    target: str
    class_names: list[str]
    threshold: float
    input: InputInfo
    models: dict[str, str]
    direction: DirectionInfo
    lambdas: list[float]
    probabilities: list[float]
    prediction_input: float
    prediction_reconstruction: float
    flip: FlipInfo
    quality: Quality
    outputs: dict[str, str] = field(default_factory=dict)
    schema_version: int = MANIFEST_SCHEMA_VERSION
    attributes: list[AttributeInfo] = field(default_factory=list)  # when the job asked

    @property
    def unreliable(self) -> bool:
        return self.quality.unreliable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExplanationResult:
        raw = dict(raw)
        raw["input"] = InputInfo(**raw["input"])
        raw["direction"] = DirectionInfo(**raw["direction"])
        raw["flip"] = FlipInfo(**raw["flip"])
        raw["quality"] = Quality(**raw["quality"])
        raw["attributes"] = [AttributeInfo(**a) for a in raw.get("attributes", [])]
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str | bytes) -> ExplanationResult:
        return cls.from_dict(json.loads(text))

    def flip_text(self) -> str:
        if self.flip.found:
            return (f"prediction flips at λ = {self.flip.at_lambda:+.3f} "
                    f"(P({self.target}) = {self.flip.probability:.3f})")
        return f"no flip within range (searched λ from 0 to {self.flip.limit:g})"

    def reliability_text(self) -> str:
        if not self.unreliable:
            return "reliable (reconstruction within the model set's quality gate)"
        return "UNRELIABLE: " + "; ".join(self.quality.reasons)

    def summary_lines(self) -> list[str]:
        """The short summary the command line prints."""
        d = self.direction
        removed = (f", orthogonal to {', '.join(d.orthogonalized_against)}"
                   if d.orthogonalized_against else "")
        return [
            f"model set {self.model_set}, target {self.target} "
            f"(threshold {self.threshold:g}), job {self.job_id}",
            f"P({self.target}) on the input: {self.prediction_input:.3f}; "
            f"on its reconstruction: {self.prediction_reconstruction:.3f} "
            f"(pixel MSE {self.quality.pixel_mse:.4f})",
            f"direction: held-out AUC {d.auc:.3f}, accuracy {d.accuracy:.3f}, "
            f"{d.samples} probe samples{removed}",
            f"traversal: λ from {self.lambdas[0]:g} to {self.lambdas[-1]:g} in "
            f"{len(self.lambdas)} frames, P({self.target}) from {self.probabilities[0]:.3f} "
            f"to {self.probabilities[-1]:.3f}",
            self.flip_text(),
            f"reliability: {self.reliability_text()}",
        ]
