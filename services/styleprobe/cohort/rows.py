"""One row per cohort image: what its explanation found, or why it failed."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from styleprobe.explain.result import ExplanationResult

DONE, FAILED, PENDING = "done", "failed", "pending"


@dataclass
class ImageRow:
    """The result of one cohort image. ``probabilities`` are P(target) at each λ of the
    cohort's grid (empty unless done)."""

    image: str  # the input's key: a file name in the folder, or an object key
    status: str  # done | failed | pending
    job_id: str = ""
    error: str = ""
    input_sha256: str = ""
    prediction_input: float | None = None
    prediction_reconstruction: float | None = None
    flip_found: bool | None = None
    flip_lambda: float | None = None
    flip_side: str = ""
    unreliable: bool | None = None
    pixel_mse: float | None = None
    quality_reasons: str = ""
    manifest: str = ""
    probabilities: list[float] = field(default_factory=list)
    # per attribute (by rank), when the cohort asks for attributes: the change of P(target)
    # over its traversal, and the λ where the image flips (None: no flip)
    attribute_effects: list[float] = field(default_factory=list)
    attribute_flips: list[float | None] = field(default_factory=list)

    @property
    def sensitivity(self) -> float:
        """``|flip λ|``: small is sensitive; infinite when nothing flips (or not done)."""
        if self.status != DONE or not self.flip_found or self.flip_lambda is None:
            return math.inf
        return abs(self.flip_lambda)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ImageRow:
        return cls(**raw)


def done_row(image: str, result: ExplanationResult) -> ImageRow:
    """The row of an image whose explanation succeeded."""
    return ImageRow(
        image=image, status=DONE, job_id=result.job_id, input_sha256=result.input.sha256,
        prediction_input=result.prediction_input,
        prediction_reconstruction=result.prediction_reconstruction,
        flip_found=result.flip.found, flip_lambda=result.flip.at_lambda,
        flip_side=result.flip.side, unreliable=result.unreliable,
        pixel_mse=result.quality.pixel_mse, quality_reasons="; ".join(result.quality.reasons),
        manifest=result.outputs.get("manifest", ""), probabilities=list(result.probabilities),
        attribute_effects=[a.effect for a in result.attributes],
        attribute_flips=[a.flip_lambda for a in result.attributes])


def failed_row(image: str, job_id: str, reason: str) -> ImageRow:
    """The row of an image that could not be explained, with the reason."""
    return ImageRow(image=image, status=FAILED, job_id=job_id, error=reason)


def pending_row(image: str) -> ImageRow:
    """The row of an image not (yet) finished: a cancelled or unfinished cohort."""
    return ImageRow(image=image, status=PENDING)


def lambda_column(value: float) -> str:
    """The table column of P(target) at λ = ``value``, e.g. ``p_lambda_-0.375``."""
    return f"p_lambda_{value:+g}"


LISTS = ("probabilities", "attribute_effects", "attribute_flips")  # spread over columns


def attribute_columns(attributes: int) -> list[str]:
    """The columns of the attributes of rank 1..``attributes``: each one's effect (change
    of P(target) over its traversal) and flip λ."""
    return [f"attribute_{rank}_{what}" for rank in range(1, attributes + 1)
            for what in ("effect", "flip_lambda")]


def table_columns(lambdas: list[float], attributes: int = 0) -> list[str]:
    """The summary table's columns, in order (``attributes``: how many the cohort finds)."""
    fixed = [name for name in ImageRow.__dataclass_fields__ if name not in LISTS]
    return fixed + [lambda_column(v) for v in lambdas] + attribute_columns(attributes)


def table_record(row: ImageRow, lambdas: list[float], attributes: int = 0) -> dict[str, Any]:
    """``row`` as one flat record of :func:`table_columns` (missing values are None)."""
    record = row.to_dict()
    probabilities = record.pop("probabilities")
    effects, flips = record.pop("attribute_effects"), record.pop("attribute_flips")
    if probabilities and len(probabilities) != len(lambdas):
        raise ValueError(f"row {row.image!r} has {len(probabilities)} probabilities for a "
                         f"grid of {len(lambdas)} λ values")
    for i, value in enumerate(lambdas):
        record[lambda_column(value)] = probabilities[i] if probabilities else None
    for rank in range(1, attributes + 1):
        found = rank <= len(effects)
        record[f"attribute_{rank}_effect"] = effects[rank - 1] if found else None
        record[f"attribute_{rank}_flip_lambda"] = flips[rank - 1] if found else None
    return record
