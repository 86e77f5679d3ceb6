"""A cohort's settings and its record of finished images, in the artifact store.

The record is what makes a cohort resumable: an image is finished once its row lies
under ``cohorts/<id>/done/<image hash>.json`` (written atomically, after the image's own
job is complete). Rows are keyed by the image, so writing one twice replaces it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from styleprobe.cohort.rows import ImageRow, pending_row
from styleprobe.explain.artifacts import get_json, put_json
from styleprobe.explain.spec import JobSpec
from styleprobe.storage.base import ArtifactStore, ObjectNotFound

COHORT_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DEFAULT_CHUNK_SIZE = 16


class CohortError(ValueError):
    """A cohort cannot be started or resumed as asked; the message says why."""


@dataclass(frozen=True)
class CohortSpec:
    """A cohort: its id, the job spec every image shares, the classifier's threshold
    (the report measures margins from it), and whether each image's pictures are rendered
    (``render`` False: its numbers, manifest and row only; its frames stay stored as
    arrays, to be drawn on demand)."""

    cohort_id: str
    job: JobSpec
    threshold: float
    render: bool = True

    def __post_init__(self) -> None:
        _check_id(self.cohort_id)

    def to_dict(self) -> dict[str, Any]:
        return {"cohort_id": self.cohort_id, "threshold": self.threshold,
                "job": self.job.to_dict(), "render": self.render}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CohortSpec:
        return cls(cohort_id=raw["cohort_id"], job=JobSpec.from_dict(raw["job"]),
                   threshold=raw["threshold"], render=raw.get("render", True))


def _check_id(cohort_id: str) -> str:
    if not COHORT_ID.match(cohort_id):
        raise CohortError(f"cohort id {cohort_id!r} must be 1-64 lower-case letters, digits "
                          "or '-', starting with a letter or digit")
    return cohort_id


def image_hash(image: str) -> str:
    """A fixed-length name for an image key (32 hexadecimal digits of its SHA-256)."""
    return hashlib.sha256(image.encode()).hexdigest()[:32]


def image_job_id(cohort_id: str, image: str) -> str:
    """The job id of one image's explanation: the same on every run of the cohort."""
    return f"{cohort_id}-{image_hash(image)[:16]}"


def cohort_key(cohort_id: str, name: str) -> str:
    """The key of a cohort's artifact: ``cohorts/<id>/<name>``."""
    return f"cohorts/{cohort_id}/{name}"


def chunked(images: Iterable[str], size: int) -> Iterator[list[str]]:
    """``images`` in consecutive lists of ``size`` (the last may be shorter)."""
    if size < 1:
        raise CohortError(f"chunk size must be at least 1, got {size}")
    chunk: list[str] = []
    for image in images:
        chunk.append(image)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class CohortLedger:
    """A cohort's settings and finished rows in ``store``."""

    def __init__(self, store: ArtifactStore, cohort_id: str) -> None:
        self.store, self.cohort_id = store, _check_id(cohort_id)

    @property
    def spec_key(self) -> str:
        return cohort_key(self.cohort_id, "cohort.json")

    def row_key(self, image: str) -> str:
        return cohort_key(self.cohort_id, f"done/{image_hash(image)}.json")

    def start(self, spec: CohortSpec) -> bool:
        """Record ``spec``, or check it against the recorded one; whether the cohort was
        already started (a resumed run). :class:`CohortError` if the settings differ."""
        if spec.cohort_id != self.cohort_id:
            raise CohortError(f"spec of cohort {spec.cohort_id!r} given to {self.cohort_id!r}")
        try:
            recorded = CohortSpec.from_dict(get_json(self.store, self.spec_key))
        except ObjectNotFound:
            put_json(self.store, self.spec_key, spec.to_dict())
            return False
        if recorded != spec:
            old, new = recorded.to_dict(), spec.to_dict()
            differ = [k for k, v in {**new, **new["job"]}.items()
                      if k != "job" and {**old, **old["job"]}.get(k) != v]
            raise CohortError(f"cohort {self.cohort_id} was started with other settings "
                              f"({', '.join(differ)}); resume it with the same settings or "
                              "start a new cohort")
        return True

    def spec(self) -> CohortSpec:
        """The recorded settings; :class:`CohortError` if the cohort was never started."""
        try:
            return CohortSpec.from_dict(get_json(self.store, self.spec_key))
        except ObjectNotFound:
            raise CohortError(f"no cohort {self.cohort_id}") from None

    def is_finished(self, image: str) -> bool:
        return self.store.exists(self.row_key(image))

    def record(self, row: ImageRow) -> None:
        """Store the row of a finished image (replacing any earlier one)."""
        put_json(self.store, self.row_key(row.image), row.to_dict())

    def row(self, image: str) -> ImageRow:
        """The image's row; a pending row if it has not finished."""
        try:
            return ImageRow.from_dict(get_json(self.store, self.row_key(image)))
        except ObjectNotFound:
            return pending_row(image)

    def rows(self, images: Iterable[str]) -> Iterator[ImageRow]:
        """The rows of ``images``, in their order, read one at a time."""
        for image in images:
            yield self.row(image)

    def finished_count(self) -> int:
        """How many images have a row."""
        return len(self.store.list(cohort_key(self.cohort_id, "done/")))
