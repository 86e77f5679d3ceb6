"""Integration fixtures: a real ``tritonserver`` (session-scoped, free ports) on two model sets."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, GeneratorConfig
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.training.export import export_model_set

RGB_SET = "tiny-rgb"


@pytest.fixture(scope="session")
def two_set_repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` set (16x16 grayscale) and ``tiny-rgb`` (8x8 RGB, 3 classes) side by side."""
    repository = tmp_path_factory.mktemp("two_sets") / "model_repository"
    shutil.copytree(tiny_repository, repository)
    torch.manual_seed(1)
    cfg = GeneratorConfig(resolution=8, channels=3, z_dim=16, w_dim=16, mapping_layers=2,
                          channel_base=64, channel_max=16)
    generator = Generator(cfg).eval()
    export_model_set(
        name=RGB_SET, G=generator,
        encoder=Encoder(8, 3, 16, width=8, w_avg=generator.mapping.w_avg).eval(),
        classifier=Classifier(8, 3, 3, width=8).eval(),
        class_names=["normal", "benign", "tumour"], default_target="tumour",
        repository=repository, description="tiny untrained RGB test set", max_pixel_mse=0.05)
    return repository


@pytest.fixture(scope="session")
def triton_server(two_set_repository: Path,
                  cpu_triton: Callable[..., TritonProcess]) -> TritonProcess:
    """tritonserver on a CPU repository of both sets; stopped by its process id at the end."""
    return cpu_triton(two_set_repository, timeout_s=900)  # stubs import torch: slow here
