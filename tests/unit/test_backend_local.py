"""The local TorchScript backend on the tiny model set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from styleprobe.backends import BackendError, open_backend
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.modelset import ModelSetError


def test_shapes_and_chunking(tiny_repository: Path) -> None:
    chunked = LocalBackend(tiny_repository, "tiny", max_batch=3)
    whole = LocalBackend(tiny_repository, "tiny", max_batch=64)
    z = np.random.default_rng(0).standard_normal((7, 32)).astype(np.float32)
    w = chunked.mapping(z)
    assert w.shape == (7, 32) and w.dtype == np.float32
    np.testing.assert_allclose(w, whole.mapping(z), atol=1e-5)
    images, logits = chunked.decode_and_classify(w)
    assert images.shape == (7, 1, 16, 16) and logits.shape == (7, 2)
    assert images.min() >= -1 and images.max() <= 1
    np.testing.assert_allclose(logits, whole.classifier(images), atol=1e-4)
    assert chunked.encoder(images).shape == (7, 32)
    assert chunked.mapping(np.zeros((0, 32), np.float32)).shape == (0, 32)


def test_shape_mismatch_names_the_model(tiny_repository: Path) -> None:
    backend = LocalBackend(tiny_repository, "tiny")
    with pytest.raises(BackendError, match="tiny-synthesis: input has shape"):
        backend.synthesis(np.zeros((2, 31), np.float32))
    with pytest.raises(BackendError, match="tiny-classifier"):
        backend.classifier(np.zeros((2, 3, 16, 16), np.float32))
    backend.close()
    with pytest.raises(BackendError, match="closed"):
        backend.mapping(np.zeros((1, 32), np.float32))


def test_open_backend(tiny_repository: Path) -> None:
    settings = Settings(model_repository=str(tiny_repository))
    assert open_backend(settings, "tiny").model_set.name == "tiny"
    with pytest.raises(ModelSetError, match="unknown model set 'nope'"):
        open_backend(settings, "nope")
    with pytest.raises(BackendError, match="unknown model backend"):
        open_backend(Settings(backend="carrier-pigeon"), "tiny")


def test_the_device_comes_from_the_settings_and_bad_ones_are_named(
        tiny_repository: Path) -> None:
    settings = Settings(model_repository=str(tiny_repository), local_device="cpu")
    assert open_backend(settings, "tiny").device.type == "cpu"
    with pytest.raises(BackendError, match="unknown torch device 'gpu0'"):
        LocalBackend(tiny_repository, "tiny", device="gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_repository: Path) -> None:
    with pytest.raises(BackendError, match="sees no CUDA GPU"):
        LocalBackend(tiny_repository, "tiny", device="cuda")
