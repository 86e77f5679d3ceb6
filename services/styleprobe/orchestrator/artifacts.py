"""GetArtifact: one artifact of a finished job streamed through the API, in chunks.

An artifact is named as in the job's ``Explanation.artifacts`` (``strip``, ``animation``,
``frame_003``, ..., and ``manifest``) or ``CohortSummary.artifacts`` (``csv``,
``parquet``, ``report``), or by its file within the job's folder (``strip.png``,
``frames/frame_003.png``, ``summary.csv``). The names come from the job's record, so only
the job's own objects can be read. The first chunk carries the size and content type;
chunks hold at most :data:`~styleprobe.storage.base.CHUNK_BYTES` (1 MiB), read from the
store as they are sent, never the whole object at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from styleprobe.api import pb
from styleprobe.jobs import SUCCEEDED, JobRecord
from styleprobe.orchestrator.requests import RequestError, invalid
from styleprobe.storage import ArtifactStore, ObjectNotFound
from styleprobe.storage.base import CHUNK_BYTES

COHORT_ARTIFACTS = ("csv", "parquet", "report")  # as in messages.cohort_message


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


def find_artifact(record: JobRecord, name: str) -> str:
    """The key of the artifact ``name`` of the job: INVALID_ARGUMENT without a name,
    FAILED_PRECONDITION while the job has no artifacts, NOT_FOUND for a name it lacks."""
    if not name:
        raise invalid("name is required: an artifact's name as GetJob lists it, e.g. "
                      "'strip', 'report' or 'manifest'")
    keys = artifact_keys(record)
    if not keys:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"job {record.job_id} is {record.state} and has no artifacts"
                           f"{' yet' if not record.ended else ''}")
    if name in keys:
        return keys[name]
    for key in keys.values():
        if key.split("/", 2)[-1] == name:  # its file within jobs/<id>/ or cohorts/<id>/
            return key
    shown = sorted(keys)
    raise RequestError(grpc.StatusCode.NOT_FOUND,
                       f"job {record.job_id} has no artifact {name!r}; it has "
                       f"{', '.join(shown[:12])}{', ...' if len(shown) > 12 else ''}")


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


def open_artifact(store: ArtifactStore, record: JobRecord, name: str,
                  chunk_bytes: int = CHUNK_BYTES) -> ArtifactStream:
    """The stream of the artifact ``name`` of the job of ``record``."""
    return ArtifactStream(store, find_artifact(record, name), chunk_bytes)


def _gone(key: str) -> RequestError:
    return RequestError(grpc.StatusCode.NOT_FOUND,
                        f"artifact {key} is no longer stored (deleted or expired)")
