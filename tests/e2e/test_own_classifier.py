"""A classifier of one's own, end to end: trained here on knee phantoms (not by StyleProbe),
saved as TorchScript, added with ``styleprobe model-set add-classifier`` to the repository
of a running service, and explained embedded and through the service."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from styleprobe.api import pb, rpc
from styleprobe.backends.local import LocalBackend
from styleprobe.cli import run
from styleprobe.data.datasets import phantom_set, render
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.modelset import list_model_sets
from styleprobe.storage.local import LocalStore
from styleprobe.testing.stack import ServiceStack

BASE = "knee-oa"
OWN = "own-knee"
IMAGES = 10
WAIT_S = 180.0
Metadata = tuple[tuple[str, str], ...]


class SmallNet(nn.Module):
    """A user's own classifier: 64x64 grey knees -> logits (healthy, OA)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(16, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))


@pytest.fixture(scope="module")
def own_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained for a few hundred steps on knee phantoms, saved with torch.jit.script."""
    data = render(phantom_set("knee", seed=5, size=64), 600)
    assert data.labels is not None
    x = torch.from_numpy(np.ascontiguousarray(data.images.transpose(0, 3, 1, 2))) * 2 - 1
    y = torch.from_numpy(data.labels).long()
    torch.manual_seed(0)
    model = SmallNet()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(300):
        batch = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = tmp_path_factory.mktemp("own") / "my_classifier.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model.eval()).save(str(path))
    return path


def knee_pngs(n: int) -> list[bytes]:
    data = render(phantom_set("knee", seed=77, size=64), n)
    out = []
    for image in data.images:
        buffer = io.BytesIO()
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(buffer, "PNG")
        out.append(buffer.getvalue())
    return out


def finished(stub: rpc.StyleProbeStub, token: Metadata, job_id: str) -> pb.Job:
    """The job once it has ended (its stream ends with it)."""
    for _ in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=token,
                           timeout=WAIT_S):
        pass
    return stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=token, timeout=30)


def listed(stub: rpc.StyleProbeStub, token: Metadata) -> list[str]:
    return [m.name for m in stub.ListModelSets(pb.ListModelSetsRequest(), metadata=token,
                                               timeout=30).model_sets]


def test_own_classifier_embedded_and_through_the_running_service(
        service_repository: Path, stack: ServiceStack, channel: grpc.Channel,
        own_classifier: Path, tmp_path: Path) -> None:
    if BASE not in list_model_sets(service_repository):
        pytest.fail(f"the bundled {BASE} set is missing from model_repository/")
    stub = rpc.StyleProbeStub(channel)
    token: Metadata = (("authorization", f"Bearer {stack.token}"),)
    assert OWN not in listed(stub, token)

    # added while the stack runs; the existing set is explained while the new one loads
    pngs = knee_pngs(IMAGES)
    assert run(["model-set", "add-classifier", str(own_classifier), "--base", BASE,
                "--name", OWN, "--class-names", "healthy,OA", "--target", "OA",
                "--samples", "1000", "--repository", str(service_repository)]) == 0
    during = [stub.Explain(pb.ExplainRequest(image_bytes=png, model_set=BASE,
                                             lambdas="-2:2:5"), metadata=token, timeout=30)
              for png in pngs[:3]]

    # embedded: 10 images
    backend = LocalBackend(service_repository, OWN)
    explainer = Explainer(backend, LocalStore(tmp_path / "embedded"))
    spec = JobSpec.create(backend.model_set, "OA", "-3:3:9", ProbeSettings(samples=1000))
    embedded = [explainer.explain(png, spec, filename=f"knee-{i}.png")
                for i, png in enumerate(pngs)]
    assert all(r.model_set == OWN and len(r.probabilities) == 9 for r in embedded)
    assert sum(r.flip.found for r in embedded) >= IMAGES // 2
    assert embedded[0].direction.auc > 0.8

    # through the service: served without a restart
    assert OWN in listed(stub, token)  # ListModelSets reads the repository on each call
    assert [finished(stub, token, job.job_id).state for job in during] == [
        pb.JOB_STATE_SUCCEEDED] * 3
    jobs = [stub.Explain(pb.ExplainRequest(image_bytes=png, model_set=OWN, target="OA",
                                           lambdas="-3:3:9"), metadata=token, timeout=30)
            for png in pngs]
    ended = [finished(stub, token, job.job_id) for job in jobs]
    assert [job.state for job in ended] == [pb.JOB_STATE_SUCCEEDED] * IMAGES, \
        [job.error for job in ended]
    assert all(job.model_set == OWN and len(job.explanation.probabilities) == 9
               for job in ended)
