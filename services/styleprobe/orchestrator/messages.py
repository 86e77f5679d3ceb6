"""API messages from job records, manifests, model sets and directions."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from styleprobe.api import pb
from styleprobe.explain.direction import Direction
from styleprobe.explain.result import ExplanationResult
from styleprobe.jobs import JobEvent, JobRecord
from styleprobe.modelset import ModelSet
from styleprobe.orchestrator.attributes import attribute_messages

STATES = {"queued": pb.JOB_STATE_QUEUED, "running": pb.JOB_STATE_RUNNING,
          "succeeded": pb.JOB_STATE_SUCCEEDED, "failed": pb.JOB_STATE_FAILED,
          "cancelled": pb.JOB_STATE_CANCELLED, "paused": pb.JOB_STATE_PAUSED}


def timestamp(seconds: float) -> Timestamp | None:
    """A Timestamp of Unix ``seconds``; None for 0 (not yet)."""
    if not seconds:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def job_counts(record: JobRecord) -> pb.JobCounts:
    """Images in the job, done, failed and pending: an "explain" job that failed counts its
    image failed; an ended job has none pending."""
    counts = record.counts
    total, done, failed = counts.get("total", 1), counts.get("done", 0), counts.get("failed", 0)
    if record.kind == "explain" and record.state == "failed":
        failed = total - done
    pending = 0 if record.ended else max(0, total - done - failed)
    return pb.JobCounts(total=total, done=done, failed=failed, pending=pending)


def job_message(record: JobRecord, explanation: pb.Explanation | None = None,
                cohort: pb.CohortSummary | None = None) -> pb.Job:
    spec = record.request.spec
    return pb.Job(
        job_id=record.job_id, kind=record.kind, state=STATES[record.state], stage=record.stage,
        progress=record.progress, created_at=timestamp(record.created_at),
        started_at=timestamp(record.started_at), finished_at=timestamp(record.finished_at),
        error=record.error, model_set=spec.model_set, target=spec.target,
        lambdas=str(spec.lambdas),
        counts=job_counts(record),
        stage_seconds=record.stage_seconds, explanation=explanation,
        seconds_left=seconds_left(record), cohort=cohort, pause_reason=record.pause_reason,
        idempotency_key=record.idempotency_key,
        dicom=pb.DicomReference(**record.dicom) if record.dicom else None)


def seconds_left(record: JobRecord, now: float | None = None) -> float:
    """Estimated seconds until a running cohort has finished its images: the time per
    image finished so far (since its prepare stage) times the images pending; 0 while no
    image has finished, and for any other job."""
    counts = record.counts
    finished = counts.get("done", 0) + counts.get("failed", 0)
    pending = max(0, counts.get("total", 1) - finished)
    if record.kind != "cohort" or record.state not in ("running", "paused") or not finished:
        return 0.0
    elapsed = ((time.time() if now is None else now) - record.started_at
               - record.stage_seconds.get("prepare", 0.0))
    return max(0.0, elapsed) / finished * pending


def cohort_message(record: JobRecord, url: Callable[[str], str]) -> pb.CohortSummary | None:
    """The summary files of a cohort (with a URL from ``url``), once written."""
    names = ("csv", "parquet", "report")
    keys = {name: record.object_key(name) for name in names}
    if not all(keys.values()):
        return None
    return pb.CohortSummary(
        artifacts=[pb.Artifact(name=name, key=key, url=url(key)) for name, key in keys.items()],
        unreliable=record.counts.get("unreliable", 0), flipped=record.counts.get("flipped", 0))


def event_message(job: pb.Job, event: JobEvent) -> pb.JobEvent:
    """The event: ``job`` (now) as it was at the event (state, stage, progress)."""
    then = pb.Job()
    then.CopyFrom(job)
    then.state, then.stage, then.progress = STATES[event.state], event.stage, event.progress
    return pb.JobEvent(job=then, message=event.message, time=timestamp(event.time))


def explanation_message(result: ExplanationResult, url: Callable[[str], str]) -> pb.Explanation:
    """The manifest's numbers, and a URL (from ``url``) for every output."""
    flip, quality, direction = result.flip, result.quality, result.direction
    manifest_key = result.outputs.get("manifest", "")
    return pb.Explanation(
        manifest_key=manifest_key, manifest_url=url(manifest_key) if manifest_key else "",
        class_names=result.class_names, threshold=result.threshold,
        prediction_input=result.prediction_input,
        prediction_reconstruction=result.prediction_reconstruction,
        lambdas=result.lambdas, probabilities=result.probabilities,
        flip=pb.Flip(found=flip.found, side=flip.side, limit=flip.limit,
                     at_lambda=flip.at_lambda or 0.0, probability=flip.probability or 0.0),
        quality=pb.ReconstructionQuality(
            pixel_mse=quality.pixel_mse, max_pixel_mse=quality.max_pixel_mse,
            prediction_agrees=quality.prediction_agrees, unreliable=quality.unreliable,
            reasons=quality.reasons,
            reason_codes=[f"RELIABILITY_REASON_{code}" for code in quality.reason_codes],
            out_of_domain=quality.out_of_domain),
        direction=pb.DirectionSummary(key=direction.key, auc=direction.auc,
                                      accuracy=direction.accuracy, samples=direction.samples),
        models=result.models, input_sha256=result.input.sha256,
        artifacts=[pb.Artifact(name=name, key=key, url=url(key))
                   for name, key in sorted(result.outputs.items())],
        attributes=attribute_messages(result))


def model_set_message(model_set: ModelSet) -> pb.ModelSetInfo:
    prep = model_set.preprocessing
    return pb.ModelSetInfo(
        name=model_set.name, description=model_set.description, resolution=prep.resolution,
        channels=prep.channels, class_names=model_set.classifier.class_names,
        default_target=model_set.default_target,
        nuisance_directions=sorted(model_set.nuisance_directions),
        models={kind: entry.version_id for kind, entry in model_set.models.items()},
        metrics=numbers(model_set.metrics))


def numbers(tree: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a nested record, by dotted path (``classifier.auc``)."""
    flat: dict[str, float] = {}
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(numbers(value, f"{path}."))
        elif (isinstance(value, int | float) and not isinstance(value, bool)
              and math.isfinite(value)):
            flat[path] = float(value)
    return flat


def direction_message(direction: Direction) -> pb.Direction:
    return pb.Direction(
        key=direction.key, target=direction.target, auc=direction.auc,
        accuracy=direction.accuracy, auc_unconstrained=direction.auc_unconstrained,
        samples=direction.samples, positive_share=direction.positive_share,
        latent_std=direction.latent_std,
        orthogonalized_against=direction.orthogonalized_against,
        generator=direction.generator, classifier=direction.classifier)
