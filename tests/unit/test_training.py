"""Training loops at tiny size: finite losses, checkpoints, exact resumption."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from styleprobe.data.datasets import DataError, phantom_set, render
from styleprobe.models.stylegan2 import GeneratorConfig
from styleprobe.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    to_images,
    to_tensor,
)
from styleprobe.training.classifier import (
    ClassifierTrainConfig,
    load_classifier,
    train_classifier,
)
from styleprobe.training.encoder import (
    EncoderTrainConfig,
    EncoderTrainer,
    load_encoder,
    lowpass_error,
    statistics_error,
    texture_statistics,
    train_encoder,
)
from styleprobe.training.gan import GanTrainConfig, GanTrainer, load_generator, train_gan

torch.set_num_threads(1)
RESOLUTION = 16
GEN_CFG = GeneratorConfig(resolution=RESOLUTION, channels=1, z_dim=32, w_dim=32,
                          mapping_layers=2, channel_base=128, channel_max=16, channel_min=8)


def tiny_trainer() -> GanTrainer:
    return GanTrainer(GEN_CFG, GanTrainConfig(batch=4, r1_interval=2, seed=0))


@pytest.fixture(scope="module")
def knees() -> np.ndarray:
    return render(phantom_set("knee", seed=0, size=RESOLUTION), 32)


def all_finite(stats: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in stats.values())


def test_gan_steps_give_finite_losses(knees) -> None:
    trainer = tiny_trainer()
    data = to_tensor(knees.images)
    history = [trainer.train_step(data) for _ in range(3)]
    assert all(all_finite(s) for s in history)
    assert history[0]["r1"] > 0  # lazy R1 runs on step 0, 2, ...
    assert history[1]["r1"] == 0
    assert trainer.step == 3 and len(trainer.history) == 3


def test_gan_resume_reproduces_the_next_step_exactly(knees, tmp_path: Path) -> None:
    data = to_tensor(knees.images)
    live = tiny_trainer()
    for _ in range(2):
        live.train_step(data)
    live.save(tmp_path / "checkpoint.pt")
    resumed = GanTrainer.resume(tmp_path / "checkpoint.pt")
    assert resumed.step == 2

    assert live.train_step(data) == resumed.train_step(data)
    for name in ("G", "D", "G_ema"):
        live_state, resumed_state = (getattr(t, name).state_dict() for t in (live, resumed))
        for key, value in live_state.items():
            assert torch.equal(value, resumed_state[key]), f"{name}.{key}"


def test_train_gan_writes_checkpoints_and_grids_and_continues(knees, tmp_path: Path) -> None:
    trainer = tiny_trainer()
    ckpt = train_gan(trainer, knees, tmp_path, iterations=2, checkpoint_every=1, grid_every=1)
    assert ckpt == tmp_path / "checkpoint.pt"
    assert (tmp_path / "samples_latest.png").is_file()
    assert (tmp_path / "samples_000001.png").is_file()
    resumed = GanTrainer.resume(ckpt)
    train_gan(resumed, knees, tmp_path, iterations=3)
    assert load_checkpoint(ckpt, kind="gan")["step"] == 3
    G = load_generator(ckpt)
    assert not G.training and G.cfg == GEN_CFG


def test_checkpoint_of_the_wrong_kind_or_missing_is_rejected(tmp_path: Path) -> None:
    save_checkpoint({"kind": "encoder"}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="expected 'gan'"):
        load_checkpoint(tmp_path / "e.pt", kind="gan")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", kind="gan")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(tmp_path / "junk.pt", kind="gan")


def test_image_tensor_conversion_round_trips() -> None:
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    tensor = to_tensor(images)
    assert tensor.shape == (2, 3, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1
    np.testing.assert_allclose(to_images(tensor), images, atol=1e-6)


def test_texture_statistics_ignore_where_the_texture_lies() -> None:
    patches = phantom_set("histology", seed=0, size=32)
    image = to_tensor(np.stack([patches.sample(i).image for i in range(4)]))
    moved = torch.roll(image, shifts=(9, 13), dims=(2, 3))  # the same nuclei, elsewhere
    darker = image * 0.8 - 0.2
    assert texture_statistics(image).shape == (4, 12)
    assert statistics_error(image, moved) < 1e-3 < lowpass_error(image, moved)
    assert statistics_error(image, darker) > 10 * statistics_error(image, moved)


@pytest.mark.parametrize("weights", [{}, {"pixel_weight": 0.0, "lowpass_weight": 0.0,
                                          "statistics_weight": 10.0, "prior_weight": 1.0}])
def test_encoder_training_gives_finite_metrics_and_a_checkpoint(knees, tmp_path: Path,
                                                                weights: dict) -> None:
    G = tiny_trainer().G_ema
    trainer = EncoderTrainer(G, EncoderTrainConfig(bank_size=16, batch=4, real_batch=4,
                                                   width=8, **weights))
    real, held = knees.subset(slice(0, 24)), knees.subset(slice(24, 32))
    metrics = train_encoder(trainer, real, held, tmp_path, "gan.pt", iterations=3,
                            checkpoint_every=2)
    assert set(metrics) >= {"latent_mse_generated", "pixel_mse_generated", "pixel_mse_real"}
    assert all_finite(metrics)
    assert all(math.isfinite(v) for s in trainer.history for v in s.values())
    encoder, state = load_encoder(tmp_path / "encoder.pt")
    assert state["step"] == 3 and state["generator_checkpoint"] == "gan.pt"
    assert encoder(to_tensor(held.images)).shape == (8, GEN_CFG.w_dim)

    again = EncoderTrainer(G, trainer.cfg)
    again.load_state_dict(state)
    assert again.step == 3


def test_classifier_training_gives_finite_metrics_and_a_checkpoint(knees,
                                                                   tmp_path: Path) -> None:
    train, test = knees.subset(slice(0, 24)), knees.subset(slice(24, 32))
    assert len(np.unique(test.labels)) == 2
    metrics = train_classifier(train, test, ["healthy", "OA"], tmp_path,
                               ClassifierTrainConfig(epochs=2, batch=8, width=8))
    assert 0.0 <= metrics["test_auc"] <= 1.0 and all_finite(metrics)
    model, state = load_classifier(tmp_path / "classifier.pt")
    assert state["class_names"] == ["healthy", "OA"]
    assert model(to_tensor(test.images)).shape == (8, 2)


def test_classifier_training_needs_labels_of_two_classes(knees, tmp_path: Path) -> None:
    one_class = knees.subset(np.flatnonzero(knees.labels == 0))
    cfg = ClassifierTrainConfig(epochs=1, batch=4, width=8)
    with pytest.raises(DataError, match="two classes"):
        train_classifier(one_class, knees, ["healthy", "OA"], tmp_path, cfg)
    with pytest.raises(DataError, match="two classes"):
        train_classifier(knees, one_class, ["healthy", "OA"], tmp_path, cfg)
    assert not (tmp_path / "classifier.pt").exists()
