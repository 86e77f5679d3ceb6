"""Shared fixtures: a tiny, untrained model set exported once per test session, and a
CPU ``tritonserver`` on any model repository."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import required
from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, GeneratorConfig, seeded_z
from styleprobe.serving.cpu_repository import build_cpu_repository
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.triton import triton_server
from styleprobe.training.export import export_model_set

# One torch thread: the test machines have 2 cores shared with other work, where more
# threads are many times slower (a 200-image decode: 0.15 s on 1 thread, 5.5 s on 2).
torch.set_num_threads(1)

TINY_SET = "tiny"
TINY_RESOLUTION = 16
TINY_W_DIM = 32


def _balanced_classifier(generator: Generator, classifier: torch.nn.Module) -> None:
    """Shift the untrained classifier's bias so that half of the generator's samples are sick."""
    classifier.eval()
    with torch.no_grad():
        z = seeded_z(256, generator.cfg.z_dim, seed=99)
        images = generator(z, noise_mode="const").clamp(-1, 1)
        logits = classifier(images)
        margin = float((logits[:, 1] - logits[:, 0]).median())
        classifier.head[-1].bias[1] -= margin


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding the untrained 16x16 grayscale model set ``tiny``.

    Classes ``healthy``/``sick`` (target ``sick``, balanced on generated samples), and two
    fake nuisance directions ``exposure`` and ``rotation``.
    """
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=TINY_RESOLUTION, channels=1, z_dim=32, w_dim=TINY_W_DIM,
                          mapping_layers=2, channel_base=256, channel_max=32)
    generator = Generator(cfg).eval()
    encoder = Encoder(TINY_RESOLUTION, 1, TINY_W_DIM, width=8,
                      w_avg=generator.mapping.w_avg).eval()
    classifier = Classifier(TINY_RESOLUTION, 1, 2, width=8)
    _balanced_classifier(generator, classifier)
    rng = np.random.default_rng(5)
    nuisance = {}
    for name in ("exposure", "rotation"):
        vec = rng.standard_normal(TINY_W_DIM)
        nuisance[name] = [float(v) for v in vec / np.linalg.norm(vec)]
    repository = tmp_path_factory.mktemp("model_repository")
    export_model_set(
        name=TINY_SET, G=generator, encoder=encoder, classifier=classifier,
        class_names=["healthy", "sick"], default_target="sick", repository=repository,
        description="tiny untrained test set", max_pixel_mse=0.05,
        nuisance_directions=nuisance,
    )
    return repository


@pytest.fixture(scope="session")
def cpu_triton(tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[..., TritonProcess]]:
    """``start(repository, timeout_s)``: tritonserver on the CPU repository built from a
    model repository (free ports), which serves the sets added to that model repository
    while it runs; the test fails if nvidia-pytriton is not installed.
    Every server started is stopped by its process id at the end of the session."""
    started: list[TritonProcess] = []

    def start(repository: Path, timeout_s: float = 300.0) -> TritonProcess:
        required.package("pytriton")
        work = tmp_path_factory.mktemp("triton")
        build_cpu_repository(repository, work / "repository")
        server = triton_server(work / "repository", work / "tritonserver.log", repository)
        started.append(server)
        return server.start(timeout_s=timeout_s)

    yield start
    for server in started:
        server.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzz suite's counts (cases tried, by outcome or gRPC status), when it ran."""
    from fuzz import TALLY

    if TALLY:
        terminalreporter.section("fuzz cases")
        for name, cases in sorted(TALLY.items()):
            terminalreporter.write_line(f"{name}: {cases}")
        terminalreporter.write_line(f"total: {sum(TALLY.values())} cases")
