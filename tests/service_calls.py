"""Calls the end-to-end tests make on a running service: auth metadata, phantom PNGs, waiting."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from styleprobe.api import pb, rpc
from styleprobe.data.knee import KneePhantoms

WAIT_S = 300.0


def auth(token: str) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries ``token``."""
    return (("authorization", f"Bearer {token}"),)


def knee_pngs(count: int, seed: int) -> list[bytes]:
    """``count`` 16x16 knee phantoms as PNG bytes."""
    phantoms = KneePhantoms(seed=seed, size=16)
    images = []
    for index in range(count):
        buffer = io.BytesIO()
        pixels = np.round(phantoms.sample(index).image[..., 0] * 255).astype(np.uint8)
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def finished(stub: rpc.StyleProbeStub, token: str, job: pb.Job) -> pb.Job:
    """The job once it has ended (it must have succeeded)."""
    for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=auth(token),
                           timeout=WAIT_S):
        pass
    final = stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=auth(token), timeout=30)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    return final
