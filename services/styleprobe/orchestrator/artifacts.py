"""GetArtifact: one artifact of a finished job streamed through the API, in chunks.

An artifact is named as in the job's ``Explanation.artifacts`` (``strip``, ``animation``,
``frame_003``, ..., and ``manifest``) or ``CohortSummary.artifacts`` (``csv``,
``parquet``, ``report``), or by its file within the job's folder (``strip.png``,
``frames/frame_003.png``, ``summary.csv``). The names come from the job's record, so only
the job's own objects can be read. A cohort's images are jobs of their own without a
record (``<cohort id>-<image hash>``, the summary's ``job_id`` column): theirs come from
the image's manifest, once the cohort's record shows it exists; the pictures of an image of
a cohort that renders nothing (``render_images`` false) are drawn when first asked for.
The first chunk carries
the size and content type; chunks hold at most
:data:`~styleprobe.storage.base.CHUNK_BYTES` (1 MiB), read from the store as they are
sent, never the whole object at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import grpc

from styleprobe.api import pb
from styleprobe.explain.artifacts import job_key
from styleprobe.explain.engine import check_job_id, render_on_demand
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import JobSpecError
from styleprobe.jobs import SUCCEEDED, JobNotFoundError, JobRecord, JobStore
from styleprobe.orchestrator.requests import RequestError, invalid
from styleprobe.reaper import IMAGE_JOB, MANIFEST
from styleprobe.storage import ArtifactStore, ObjectNotFound
from styleprobe.storage.base import CHUNK_BYTES

COHORT_ARTIFACTS = ("csv", "parquet", "report")  # as in messages.cohort_message

log = logging.getLogger(__name__)


def artifact_keys(record: JobRecord) -> dict[str, str]:
    """The job's artifacts by name (empty until it has any: an explain job once it has
    succeeded, a cohort once its summary is written)."""
    if record.kind == "cohort":
        keys = {name: record.object_key(name) for name in COHORT_ARTIFACTS}
        return keys if all(keys.values()) else {}
    outputs = record.keys.get("outputs")
    manifest = record.object_key("manifest")
    if record.state != SUCCEEDED or not isinstance(outputs, dict) or not manifest:
        return {}
    return {**outputs, "manifest": manifest}


def image_artifact_keys(store: ArtifactStore, job_id: str) -> dict[str, str]:
    """A cohort image's artifacts by name, from its manifest (empty without one: the image
    failed, or is not explained yet)."""
    try:
        manifest = store.get(job_key(job_id, MANIFEST))
    except ObjectNotFound:
        return {}
    return dict(ExplanationResult.from_json(manifest).outputs)


def find_artifact(record: JobRecord, name: str) -> str:
    """The key of the artifact ``name`` of the job: INVALID_ARGUMENT without a name,
    FAILED_PRECONDITION while the job has no artifacts, NOT_FOUND for a name it lacks."""
    keys = artifact_keys(record)
    if not keys:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"job {record.job_id} is {record.state} and has no artifacts"
                           f"{' yet' if not record.ended else ''}")
    return pick_artifact(keys, record.job_id, name)


def pick_artifact(keys: dict[str, str], job_id: str, name: str) -> str:
    """The key of ``name`` among a job's artifacts ``keys`` (by name, or by file within
    the job's folder); INVALID_ARGUMENT without a name, NOT_FOUND for one it lacks."""
    if not name:
        raise invalid("name is required: an artifact's name as GetJob lists it, e.g. "
                      "'strip', 'report' or 'manifest'")
    if name in keys:
        return keys[name]
    for key in keys.values():
        if key.split("/", 2)[-1] == name:  # its file within jobs/<id>/ or cohorts/<id>/
            return key
    shown = sorted(keys)
    raise RequestError(grpc.StatusCode.NOT_FOUND,
                       f"job {job_id} has no artifact {name!r}; it has "
                       f"{', '.join(shown[:12])}{', ...' if len(shown) > 12 else ''}")


def locate_artifact(store: ArtifactStore, jobs: JobStore, job_id: str, name: str) -> str:
    """The key of the artifact ``name`` of ``job_id``: a job with a record, or an image of
    a cohort that has one; NOT_FOUND for any other id."""
    if not job_id:
        raise invalid("job_id is required")
    try:
        return find_artifact(jobs.get(job_id), name)
    except JobNotFoundError:
        cohort = _cohort_of_image(jobs, job_id)
    if not cohort:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"no job {job_id!r} (unknown, or expired)")
    keys = image_artifact_keys(store, job_id)
    if not keys:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"image {job_id} of cohort {cohort} has no artifacts (it failed, "
                           "or is not explained yet)")
    try:
        return pick_artifact(keys, job_id, name)
    except RequestError as exc:
        if exc.code != grpc.StatusCode.NOT_FOUND or "report" in keys:
            raise
    # a cohort that renders nothing: the image's pictures are drawn now, once
    log.info("drawing a cohort image's pictures on demand", extra={"job_id": job_id})
    return pick_artifact(dict(render_on_demand(store, job_id).outputs), job_id, name)


def _cohort_of_image(jobs: JobStore, job_id: str) -> str:
    """The cohort whose image ``job_id`` is, if that cohort has a record; else ""."""
    image = IMAGE_JOB.fullmatch(job_id)
    if image is None:
        return ""
    try:
        check_job_id(job_id)
        return jobs.get(image["cohort"]).job_id
    except (JobNotFoundError, JobSpecError):
        return ""


class ArtifactStream:
    """The chunks of one stored artifact as API messages; the first with size and type."""

    def __init__(self, store: ArtifactStore, key: str,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.key = key
        try:
            self.size = store.stat(key).size
            self.content_type = store.content_type(key)
        except ObjectNotFound:
            raise _gone(key) from None
        self._chunks: Iterator[bytes] = store.read_chunks(key, chunk_bytes)
        self._first = True

    def next_message(self) -> pb.ArtifactChunk | None:
        """The next chunk (blocking on the store); None after the last."""
        try:
            data = next(self._chunks, None)
        except ObjectNotFound:
            raise _gone(self.key) from None
        if self._first:
            self._first = False
            return pb.ArtifactChunk(data=data or b"", size=self.size,
                                    content_type=self.content_type)
        return None if data is None else pb.ArtifactChunk(data=data)


def open_artifact(store: ArtifactStore, jobs: JobStore, job_id: str, name: str,
                  chunk_bytes: int = CHUNK_BYTES) -> ArtifactStream:
    """The stream of the artifact ``name`` of ``job_id`` (:func:`locate_artifact`)."""
    return ArtifactStream(store, locate_artifact(store, jobs, job_id, name), chunk_bytes)


def _gone(key: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND,
                        f"artifact {key} is no longer stored (deleted or expired)")
