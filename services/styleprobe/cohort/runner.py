"""Runs a cohort through the explanation engine, image by image, resumably.

:class:`CohortRunner` is what a process that holds a model backend does with a cohort:
:meth:`~CohortRunner.prepare` records the settings and probes the direction once;
:meth:`~CohortRunner.run_chunk` explains the images of one chunk that have no row yet,
each as a single-image job with a fixed job id; :meth:`~CohortRunner.run` does every chunk
and writes the summary (the embedded mode). An image that cannot be read is marked
failed with the reason and the cohort goes on; any other error (the model server or the
store failing) stops the run, and a later run resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from styleprobe.cohort.ledger import (
    DEFAULT_CHUNK_SIZE,
    CohortError,
    CohortLedger,
    CohortSpec,
    chunked,
    image_job_id,
)
from styleprobe.cohort.rows import ImageRow, done_row, failed_row
from styleprobe.cohort.summary import CohortSummary, write_summary
from styleprobe.data.codecs import ImageDecodeError
from styleprobe.data.datasets import IMAGE_SUFFIXES
from styleprobe.explain.direction import ProbeSettings, ensure_direction
from styleprobe.explain.engine import Explainer, ExplainOptions
from styleprobe.explain.inputs import ImageSource
from styleprobe.explain.lambdas import parse_lambdas
from styleprobe.logs import log_context
from styleprobe.metrics import count_cohort_image
from styleprobe.storage.base import ObjectNotFound

log = logging.getLogger(__name__)
IMAGE_ERRORS = (ImageDecodeError, ObjectNotFound)  # the image's fault: the cohort goes on
OnImage = Callable[[ImageRow, bool], None]  # (row, skipped because already finished)


def list_folder(folder: Path) -> list[str]:
    """The image files directly in ``folder`` (by suffix, as ``load_folder``), sorted."""
    if not folder.is_dir():
        raise CohortError(f"{folder} does not exist or is not a folder")
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise CohortError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return names


def options_for(spec: CohortSpec) -> ExplainOptions:
    """The engine's options for every image of ``spec``."""
    return ExplainOptions(probe=ProbeSettings(**spec.probe), orthogonalize=spec.orthogonalize,
                          search_rounds=spec.search_rounds, search_points=spec.search_points)


class CohortRunner:
    """Explains the images of one cohort with ``explainer``; ``source`` turns an image key
    into what the engine reads (a path, or the bytes of an object)."""

    def __init__(self, explainer: Explainer, ledger: CohortLedger,
                 source: Callable[[str], ImageSource]) -> None:
        self.explainer, self.ledger, self.source = explainer, ledger, source
        self._spec: CohortSpec | None = None

    @property
    def spec(self) -> CohortSpec:
        """The cohort's recorded settings."""
        if self._spec is None:
            self._spec = self.ledger.spec()
        return self._spec

    def prepare(self, spec: CohortSpec) -> str:
        """Check ``spec`` against the model set, record it (or check it against a resumed
        cohort's) and probe the direction once; the direction's key."""
        model_set = self.explainer.backend.model_set
        if spec.model_set != model_set.name:
            raise CohortError(f"cohort is for model set {spec.model_set!r}, the backend "
                              f"serves {model_set.name!r}")
        model_set.classifier.class_index(spec.target)
        parse_lambdas(spec.lambdas)
        options = options_for(spec)
        self.ledger.start(spec)
        self._spec = spec
        return ensure_direction(self.explainer.backend, self.explainer.store, spec.target,
                                options.probe, options.orthogonalize)

    def run_image(self, image: str) -> ImageRow | None:
        """Explain one image unless it has a row; its new row, or None if it had one."""
        if self.ledger.is_finished(image):
            count_cohort_image("skipped")
            return None
        spec = self.spec
        job_id = image_job_id(spec.cohort_id, image)
        with log_context(job_id=job_id):
            try:
                result = self.explainer.explain(self.source(image), spec.target, spec.lambdas,
                                                options_for(spec), job_id=job_id,
                                                filename=Path(image).name)
                row = done_row(image, result)
            except IMAGE_ERRORS as exc:
                reason = str(exc) if isinstance(exc, ImageDecodeError) else f"no object {exc}"
                log.warning("cohort image failed", extra={"image": image, "reason": reason})
                row = failed_row(image, job_id, reason)
            self.ledger.record(row)
        count_cohort_image(row.status)
        return row

    def run_chunk(self, images: Sequence[str], on_image: OnImage | None = None) -> None:
        """Explain the unfinished images of one chunk."""
        for image in images:
            row = self.run_image(image)
            if on_image is not None:
                on_image(row or self.ledger.row(image), row is None)

    def run(self, spec: CohortSpec, images: Sequence[str], on_image: OnImage | None = None,
            chunk_size: int = DEFAULT_CHUNK_SIZE) -> CohortSummary:
        """Prepare, explain every unfinished image chunk by chunk, and write the summary."""
        self.prepare(spec)
        for chunk in chunked(images, chunk_size):
            self.run_chunk(chunk, on_image)
        return write_summary(self.ledger, images)
