"""Runs a cohort through the explanation stages, chunk by chunk, resumably.

:class:`CohortRunner` is what a process does with a cohort:
:meth:`~CohortRunner.prepare` records the settings and probes the direction once;
:meth:`~CohortRunner.run_models` stores each image of a chunk as its own single-image job
(a fixed job id) and runs the stages that call models for the whole chunk at once (each
stage's model calls batched across the chunk's images: one encoder call, one
reconstruction call, one traversal call of images × frames, one call per round of the
flip search); :meth:`~CohortRunner.run_outputs` runs the rest (render, manifest) for one
image and records its row. The service runs the two halves in separate tasks (gpu and cpu
queues); :meth:`~CohortRunner.run` does everything in this process and writes the summary
(the embedded mode). An image that cannot be read is marked failed with the reason and
the cohort goes on; any other error (the model server or the store failing) stops the
run, and a later run resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from itertools import pairwise
from pathlib import Path
from typing import cast

from styleprobe.backends.base import ModelBackend
from styleprobe.cohort.ledger import (
    DEFAULT_CHUNK_SIZE,
    CohortError,
    CohortLedger,
    CohortSpec,
    image_job_id,
)
from styleprobe.cohort.rows import ImageRow, done_row, failed_row
from styleprobe.cohort.summary import CohortSummary, write_summary
from styleprobe.data.codecs import ImageDecodeError
from styleprobe.data.datasets import IMAGE_SUFFIXES
from styleprobe.explain import engine
from styleprobe.explain.engine import JobKeys, StageContext
from styleprobe.explain.inputs import ImageSource, load_input
from styleprobe.explain.result import ExplanationResult
from styleprobe.logs import fingerprint, log_context
from styleprobe.metrics import count_cohort_image
from styleprobe.storage.base import ArtifactStore, ObjectNotFound

log = logging.getLogger(__name__)
IMAGE_ERRORS = (ImageDecodeError, ObjectNotFound)  # the image's fault: the cohort goes on
OnImage = Callable[[ImageRow, bool], None]  # (row, skipped because already finished)
SingleFlight = Callable[[str], AbstractContextManager[Callable[[], None]]]


def list_folder(folder: Path) -> list[str]:
    """The image files directly in ``folder`` (by suffix, as ``load_folder``), sorted."""
    if not folder.is_dir():
        raise CohortError(f"{folder} does not exist or is not a folder")
    names = sorted(p.name for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise CohortError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return names


def even_chunks(images: Sequence[str], size: int) -> list[list[str]]:
    """``images`` in consecutive chunks of at least ``size`` (one chunk of all if fewer),
    their sizes within one of each other: every model call of a chunk gets a full batch
    (no short last chunk) and the chunks take about as long."""
    if size < 1:
        raise CohortError(f"chunk size must be at least 1, got {size}")
    count = max(1, len(images) // size) if images else 0
    bounds = [round(i * len(images) / count) for i in range(count + 1)] if count else []
    return [list(images[a:b]) for a, b in pairwise(bounds)]


class CohortRunner:
    """Explains the images of one cohort. ``source`` turns an image key into what the
    engine reads (a path, or the bytes of an object); ``backend`` gives the model set's
    backend (only the stages that call models ask for it); ``single_flight`` guards the
    direction's probe across processes (default: none needed)."""

    def __init__(self, store: ArtifactStore, ledger: CohortLedger,
                 source: Callable[[str], ImageSource], backend: Callable[[], ModelBackend],
                 single_flight: SingleFlight = engine.no_lock) -> None:
        self.store, self.ledger, self.source = store, ledger, source
        self.backend, self.single_flight = backend, single_flight
        self._spec: CohortSpec | None = None

    @property
    def spec(self) -> CohortSpec:
        """The cohort's recorded settings."""
        if self._spec is None:
            self._spec = self.ledger.spec()
        return self._spec

    def context(self, job_id: str) -> StageContext:
        """The stage context of one of the cohort's jobs."""
        return StageContext(job_id, self.spec.job, self.store, self.backend,
                            single_flight=self.single_flight)

    def prepare(self, spec: CohortSpec) -> tuple[str, bool]:
        """Record ``spec`` (or check it against a resumed cohort's) and probe the direction
        once; the direction's key and whether this call probed it."""
        served = self.backend().model_set.name
        if spec.job.model_set != served:
            raise CohortError(f"cohort is for model set {spec.job.model_set!r}, the backend "
                              f"serves {served!r}")
        self.ledger.start(spec)
        self._spec = spec
        return engine.shared_direction(self.context(spec.cohort_id))

    def run_models(self, images: Sequence[str]) -> list[JobKeys | ImageRow | None]:
        """Store each image of a chunk as its job's input and run the stages that call
        models for all of them at once; per image, in order: the job's keys; its failed
        row if it cannot be read (recorded); None if it has a row already."""
        started: list[JobKeys | ImageRow | None] = []
        for image in images:
            started.append(self._store_input(image))
        jobs = [i for i, item in enumerate(started) if isinstance(item, JobKeys)]
        if not jobs:
            return started
        job_ids = [image_job_id(self.spec.cohort_id, images[i]) for i in jobs]
        try:
            done = engine.run_stages_many(
                engine.MODEL_STAGES, [self.context(job_id) for job_id in job_ids],
                [cast(JobKeys, started[i]) for i in jobs])
        except BaseException:
            for job_id in job_ids:
                engine.delete_job(self.store, job_id)
            raise
        for i, keys in zip(jobs, done, strict=True):
            started[i] = keys
        return started

    def _store_input(self, image: str) -> JobKeys | ImageRow | None:
        """Store ``image`` as its job's input: the job's first keys; its failed row if it
        cannot be read (recorded); None if it has a row already."""
        if self.ledger.is_finished(image):
            count_cohort_image("skipped")
            return None
        job_id = image_job_id(self.spec.cohort_id, image)
        with log_context(job_id=job_id):
            try:
                model_input = load_input(self.source(image),
                                         self.backend().model_set.preprocessing,
                                         Path(image).name)
            except IMAGE_ERRORS as exc:
                reason = str(exc) if isinstance(exc, ImageDecodeError) else f"no object {exc}"
                # the reason names the file, which may name a patient: it goes to the row
                log.warning("cohort image failed", extra={"image": fingerprint(image),
                                                          "error": type(exc).__name__})
                return self._record(failed_row(image, job_id, reason))
            return JobKeys(input=engine.store_input(self.store, job_id, model_input))

    def run_outputs(self, image: str, keys: JobKeys) -> ImageRow:
        """Render the image's explanation (unless the cohort renders nothing) and write its
        manifest; its row (recorded)."""
        job_id = image_job_id(self.spec.cohort_id, image)
        with log_context(job_id=job_id):
            stages = [stage for stage in engine.OUTPUT_STAGES
                      if self.spec.render or stage.name != "render"]
            keys = self._stages(job_id, stages, keys)
            result = ExplanationResult.from_json(self.store.get(keys.manifest))
            return self._record(done_row(image, result))

    def run_chunk(self, images: Sequence[str], on_image: OnImage | None = None) -> None:
        """Explain the unfinished images of one chunk (their model stages together)."""
        for image, started in zip(images, self.run_models(images), strict=True):
            row = (self.run_outputs(image, started) if isinstance(started, JobKeys)
                   else started)
            if on_image is not None:
                on_image(row or self.ledger.row(image), row is None)

    def run(self, spec: CohortSpec, images: Sequence[str], on_image: OnImage | None = None,
            chunk_size: int = DEFAULT_CHUNK_SIZE) -> CohortSummary:
        """Prepare, explain every unfinished image chunk by chunk, and write the summary."""
        self.prepare(spec)
        for chunk in even_chunks(images, chunk_size):
            self.run_chunk(chunk, on_image)
        return write_summary(self.ledger, images)

    def _stages(self, job_id: str, stages: Sequence[engine.Stage], keys: JobKeys) -> JobKeys:
        try:
            return engine.run_stages(stages, self.context(job_id), keys)
        except BaseException:
            engine.delete_job(self.store, job_id)
            raise

    def _record(self, row: ImageRow) -> ImageRow:
        self.ledger.record(row)
        count_cohort_image(row.status)
        return row
