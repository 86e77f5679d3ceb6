"""The gateway's calls to the orchestrator: Explain with an idempotency key, WatchJob until
the job ends, and its frames and difference maps read through GetArtifact (the API
itself: the gateway needs no route to the bucket's presigned URLs).

The channel comes from :func:`styleprobe.tls.open_channel`, as every client's does. A call
that finds the orchestrator UNAVAILABLE (a restart, a rolling update) is retried with
the same idempotency key, so it cannot make a second job; a watch stream that drops is
reopened (its first event is the job as it stands).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np
from PIL import Image

from styleprobe.api import pb, rpc
from styleprobe.cli.remote import CHANNEL_OPTIONS, DROPPED
from styleprobe.config import Settings
from styleprobe.gateway.routing import Route
from styleprobe.tls import ClientTLS, open_channel

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_PAUSE_S = 1.0
CALL_TIMEOUT_S = 60.0
ENDED = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)


class EngineError(RuntimeError):
    """The orchestrator refused an image, or its job did not succeed."""


class JobFailedError(EngineError):
    """The image's job ended FAILED or CANCELLED (another job may succeed)."""


@dataclass
class Outcome:
    """A succeeded job and its images: a frame per λ and a signed difference map per λ
    (uint8, (R, R) grey or (R, R, 3) RGB)."""

    job: pb.Job
    frames: list[np.ndarray]
    differences: list[np.ndarray]


class Engine:
    """A client of the orchestrator at ``settings.gateway_orchestrator``."""

    def __init__(self, settings: Settings) -> None:
        tls = (ClientTLS(ca=settings.gateway_tls_ca)
               if settings.gateway_tls or settings.gateway_tls_ca else None)
        self.channel = open_channel(settings.gateway_orchestrator, tls, CHANNEL_OPTIONS)
        self.stub = rpc.StyleProbeStub(self.channel)
        self.metadata = (("authorization", f"Bearer {settings.gateway_token}"),)
        self.timeout_s = settings.gateway_job_timeout_s

    def explain(self, data: bytes, route: Route, key: str) -> Outcome:
        """Explain ``data`` (a de-identified DICOM file) as ``route`` says under ``key``;
        wait for the job and read its images. :class:`EngineError` if it did not succeed."""
        deadline = time.monotonic() + self.timeout_s
        request = pb.ExplainRequest(image_bytes=data, filename="instance.dcm",
                                    model_set=route.model_set, target=route.target,
                                    lambdas=route.lambdas, idempotency_key=key)
        job = self._retried(deadline, lambda: self.stub.Explain(
            request, metadata=self.metadata, timeout=CALL_TIMEOUT_S))
        log.info("job submitted", extra={"job_id": job.job_id, "model_set": route.model_set})
        self._wait(job.job_id, deadline)
        job = self._retried(deadline, lambda: self.stub.GetJob(
            pb.GetJobRequest(job_id=job.job_id), metadata=self.metadata,
            timeout=CALL_TIMEOUT_S))
        if job.state != pb.JOB_STATE_SUCCEEDED:
            raise JobFailedError(f"job {job.job_id} {pb.JobState.Name(job.state)}: "
                                 f"{job.error}")
        count = len(job.explanation.lambdas)
        return Outcome(
            job=job,
            frames=[self._png(job.job_id, f"frame_{i:03d}", deadline) for i in range(count)],
            differences=[self._png(job.job_id, f"difference_{i:03d}", deadline)
                         for i in range(count)])

    def _png(self, job_id: str, name: str, deadline: float) -> np.ndarray:
        """The job's PNG artifact ``name`` as an array."""
        data = self._retried(deadline, lambda: b"".join(
            chunk.data for chunk in self.stub.GetArtifact(
                pb.GetArtifactRequest(job_id=job_id, name=name), metadata=self.metadata,
                timeout=CALL_TIMEOUT_S)))
        image = Image.open(io.BytesIO(data))
        image.load()
        return np.asarray(image)

    def _wait(self, job_id: str, deadline: float) -> None:
        """Until the job has ended (the stream is reopened if it drops)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EngineError(f"job {job_id} did not end within {self.timeout_s:g} s "
                                  "(STYLEPROBE_GATEWAY_JOB_TIMEOUT_S)")
            try:
                for event in self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id),
                                                metadata=self.metadata, timeout=left):
                    if event.job.state in ENDED:
                        return
                return
            except grpc.RpcError as exc:
                if exc.code().name not in DROPPED:
                    raise EngineError(f"watching job {job_id}: {exc.code().name}: "
                                      f"{exc.details()}") from exc
                time.sleep(RETRY_PAUSE_S)

    def _retried(self, deadline: float, call: Callable[[], T]) -> T:
        """``call()``, again while the orchestrator is UNAVAILABLE and time is left; a
        refusal as :class:`EngineError`."""
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline:
                    log.warning("orchestrator unavailable, retrying",
                                extra={"error": exc.details()})
                    time.sleep(RETRY_PAUSE_S)
                    continue
                raise EngineError(f"{code.name}: {exc.details()}") from exc

    def close(self) -> None:
        self.channel.close()
