"""Adaptive discriminator augmentation: the pipeline keeps shapes and ranges and is
differentiable; on a 500-image set the augmentation probability rises and training does
not diverge; p survives a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from styleprobe.data.datasets import phantom_set, render
from styleprobe.models.stylegan2 import GeneratorConfig
from styleprobe.training.augment import AdaptiveProbability, augment
from styleprobe.training.checkpoint import to_tensor
from styleprobe.training.gan import ADA_MAX_IMAGES, GanTrainConfig, GanTrainer

torch.set_num_threads(1)
GEN_CFG = GeneratorConfig(resolution=16, channels=1, z_dim=32, w_dim=32, mapping_layers=2,
                          channel_base=128, channel_max=16, channel_min=8)


@pytest.mark.parametrize("channels", [1, 3])
def test_augment_is_differentiable_and_p_zero_is_the_identity(channels: int) -> None:
    x = (torch.rand(8, channels, 16, 16) * 2 - 1).requires_grad_(True)
    gen = torch.Generator().manual_seed(0)
    assert augment(x, 0.0, gen) is x
    y = augment(x, 1.0, gen)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert not torch.allclose(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augmenting_rows_of_a_batch_equals_augmenting_the_batch() -> None:
    x = torch.rand(8, 3, 16, 16) * 2 - 1
    whole = augment(x, 0.7, torch.Generator().manual_seed(3))
    rows = torch.tensor([1, 5, 6])
    part = augment(x[rows], 0.7, torch.Generator().manual_seed(3), rows, batch=8)
    torch.testing.assert_close(part, whole[rows])


def test_the_controller_raises_p_when_the_discriminator_is_sure_of_real_images() -> None:
    ada = AdaptiveProbability(interval=4, speed_kimg=1.0)
    for step in range(1, 9):
        ada.observe(torch.ones(16, 1))  # r_t = 1 > 0.6
        if ada.due(step):
            assert ada.update(16, ada.sign_sum, ada.count) == 1.0
    assert ada.p == pytest.approx(2 * 16 * 4 / 1000)
    ada.observe(-torch.ones(16, 1))
    ada.update(16, ada.sign_sum, ada.count)
    assert ada.p == pytest.approx(16 * 4 / 1000)


def test_ada_on_a_500_image_set_raises_p_without_diverging(tmp_path: Path) -> None:
    data = to_tensor(render(phantom_set("knee", seed=0, size=16), 500).images)
    # ADA's speed scaled down so that p can move within a short CPU run
    trainer = GanTrainer(GEN_CFG, GanTrainConfig(batch=16, seed=0, ada_kimg=1.0))
    history = [trainer.train_step(data) for _ in range(40)]
    assert trainer.ada_on and len(data) < ADA_MAX_IMAGES  # on by default below the threshold
    p = [s["ada_p"] for s in history]
    assert p[0] == 0.0 and p[-1] > 0.2, p
    assert all(math.isfinite(v) for s in history for v in s.values())
    assert max(s["loss_d"] for s in history[-10:]) < 5.0  # D has not run away from G
    assert all(s["loss_g"] < 10.0 for s in history)
    trainer.save(tmp_path / "checkpoint.pt")
    resumed = GanTrainer.resume(tmp_path / "checkpoint.pt")
    assert resumed.ada_on and resumed.ada.p == trainer.ada.p
    assert resumed.train_step(data) == trainer.train_step(data)


def test_ada_is_off_by_default_for_a_large_set_and_when_asked() -> None:
    large = torch.zeros(ADA_MAX_IMAGES, 1, 1, 1).expand(ADA_MAX_IMAGES, 1, 16, 16)
    trainer = GanTrainer(GEN_CFG, GanTrainConfig(batch=4, seed=0))
    trainer.train_step(large)
    assert trainer.ada_on is False and "ada_p" not in trainer.history[-1]
    off = GanTrainer(GEN_CFG, GanTrainConfig(batch=4, seed=0, ada=False))
    off.train_step(large[:100])
    assert off.ada_on is False


def test_bf16_autocast_steps_give_finite_losses() -> None:
    data = to_tensor(render(phantom_set("knee", seed=0, size=16), 32).images)
    trainer = GanTrainer(GEN_CFG, GanTrainConfig(batch=8, seed=0, precision="bf16",
                                                 channels_last=True))
    assert trainer.bf16
    stats = [trainer.train_step(data) for _ in range(2)]
    assert all(math.isfinite(v) for s in stats for v in s.values())
    assert all(p.dtype == torch.float32 for p in trainer.G.parameters())  # fp32 weights
    with pytest.raises(ValueError, match="precision"):
        GanTrainConfig(precision="fp8").bf16(torch.device("cpu"))


def test_the_recipe_scales_with_the_batch() -> None:
    small, large = GanTrainConfig(batch=32), GanTrainConfig(batch=512)
    assert small.learning_rate() == 0.0025 and large.learning_rate() == 0.005
    assert large.gamma(64) == small.gamma(64) / 16
    assert large.ema_images() == 16 * small.ema_images()
    assert GanTrainConfig(batch=512, lr=0.001).learning_rate() == 0.001
    assert np.isclose(GanTrainConfig(batch=64).learning_rate(), 0.0025 * math.sqrt(2))
