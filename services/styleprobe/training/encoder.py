"""Encoder training: invert a frozen generator.

Each step takes a batch from a precomputed bank of synthetic pairs ``(w, G(w))`` (latent
loss) and a batch of real images, for which only the reconstruction ``G(E(x))`` can be
compared (pixel loss, a loss on local means, :func:`lowpass_error`, and a loss on texture
statistics, :func:`statistics_error`). Real images in the loss usually matter: an
encoder that sees only generated pairs reconstructs real images several times worse.
But the losses on real images alone can pull encodings far off the generator's latent
distribution (on histology, 9 times further from the mean w than sampled latents), where
directions probed on sampled latents mean little; the latent prior
(:func:`latent_prior_error`) keeps real encodings inside the shell where sampled latents
lie.

Where an image is random texture whose layout no code can reproduce (nuclei in a
histology patch), every loss that compares pixels or local means rewards a bland
reconstruction: a nucleus drawn in the wrong place costs twice, one left out costs once.
Tumour patches then come back as normal tissue. Texture statistics (the colour and
contrast of each channel at three scales) do not depend on layout, so they keep what a
tumour classifier reads: how much nuclear stain there is and how dark.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styleprobe.data.datasets import ImageSet
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, seeded_z
from styleprobe.training.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    stop_on_signals,
    to_tensor,
)
from styleprobe.training.progress import Progress
from styleprobe.training.runrecord import RunRecord


@dataclass
class EncoderTrainConfig:
    bank_size: int = 10240
    batch: int = 32
    real_batch: int = 16
    lr: float = 1e-3
    pixel_weight: float = 1.0
    lowpass_weight: float = 2.0  # error of 8x8 local means: where texture cannot match
    latent_weight: float = 1.0
    prior_weight: float = 0.0  # keep real images' encodings where sampled w lie
    statistics_weight: float = 0.0  # per-channel mean and contrast at three scales
    width: int = 32
    seed: int = 0


def make_bank(G: Generator, n: int, seed: int, desc: str,
              batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` pairs (w, G(w)) with deterministic noise, on G's device; images NCHW in
    [-1, 1]. Progress is shown under the name ``desc``."""
    z = seeded_z(n, G.cfg.z_dim, seed).to(G.mapping.w_avg.device)
    ws, images = [], []
    with torch.no_grad(), Progress(n, desc, unit="pairs") as bar:
        for i in range(0, n, batch):
            w = G.mapping(z[i:i + batch])
            ws.append(w)
            images.append(decode(G, w))
            bar.update(len(w))
    return torch.cat(ws), torch.cat(images)


def lowpass_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of the images' local means on an 8x8 grid.

    Exact pixels of random texture (nuclei, noise) cannot be reconstructed, and pixel MSE
    alone then pulls reconstructions toward a bland mean; matching local means keeps
    how much of each tissue sits where, which is what a classifier reads.
    """
    k = max(1, a.shape[-1] // 8)
    return F.mse_loss(F.avg_pool2d(a, k), F.avg_pool2d(b, k))


def texture_statistics(x: torch.Tensor) -> torch.Tensor:
    """[N, C, R, R] -> [N, 4C]: each channel's mean, and its standard deviation at full
    resolution and after 2x2 and 4x4 average pooling (contrast by scale)."""
    stds = [F.avg_pool2d(x, k).std(dim=(2, 3)) if k > 1 else x.std(dim=(2, 3))
            for k in (1, 2, 4)]
    return torch.cat([x.mean(dim=(2, 3)), *stds], dim=1)


def statistics_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE of the images' :func:`texture_statistics`: blind to where texture lies."""
    return F.mse_loss(texture_statistics(a), texture_statistics(b))


def latent_prior_error(w: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """How far encodings lie outside the sampled latents' shell: the excess of each
    w's mean squared standardised coordinate over 1 (0 for a typical sampled w)."""
    return F.relu(((w - mean) / std).square().mean(dim=1) - 1.0).mean()


def decode(G: Generator, w: torch.Tensor) -> torch.Tensor:
    """The exported synthesis contract: w [N, w_dim] -> image in [-1, 1], constant noise."""
    return G.synthesis(G.broadcast(w), noise_mode="const").clamp(-1, 1)


class EncoderTrainer:
    """Encoder, optimiser and step counter; resumable from ``encoder.pt``."""

    def __init__(self, G: Generator, cfg: EncoderTrainConfig, device: str = "cpu") -> None:
        torch.manual_seed(cfg.seed)
        self.device = torch.device(device)
        self.G, self.cfg = G.eval().requires_grad_(False).to(self.device), cfg
        gc = G.cfg
        self.E = Encoder(gc.resolution, gc.channels, gc.w_dim, cfg.width,
                         G.mapping.w_avg).to(self.device)
        self.opt = torch.optim.Adam(self.E.parameters(), lr=cfg.lr)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def train_step(self, bank_w: torch.Tensor, bank_x: torch.Tensor,
                   real: torch.Tensor | None,
                   shell: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """One step; ``shell`` is the bank's latent mean and std, for the latent prior."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.step])
        idx = torch.from_numpy(rng.choice(len(bank_w), cfg.batch, replace=False))
        w, x = bank_w[idx], bank_x[idx]
        w_hat = self.E(x)
        loss_latent = F.mse_loss(w_hat, w)
        loss = cfg.latent_weight * loss_latent
        loss_real = torch.zeros([])
        if real is not None and (cfg.pixel_weight > 0 or cfg.lowpass_weight > 0
                                 or cfg.statistics_weight > 0):
            ridx = torch.from_numpy(rng.choice(len(real), cfg.real_batch,
                                               replace=len(real) < cfg.real_batch))
            xr = real[ridx]
            w_real = self.E(xr)
            rec = decode(self.G, w_real)
            loss_real = F.mse_loss(rec, xr)
            loss = (loss + cfg.pixel_weight * loss_real
                    + cfg.lowpass_weight * lowpass_error(rec, xr)
                    + cfg.statistics_weight * statistics_error(rec, xr))
            if cfg.prior_weight > 0:
                assert shell is not None, "the latent prior needs the bank's mean and std"
                loss = loss + cfg.prior_weight * latent_prior_error(w_real, *shell)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        stats = {"step": float(self.step), "latent": loss_latent.item(),
                 "pixel_real": loss_real.item()}
        self.history.append(stats)
        return stats

    def state_dict(self, generator_checkpoint: str) -> dict:
        gc = self.G.cfg
        return {"kind": "encoder", "generator_checkpoint": generator_checkpoint,
                "config": {"resolution": gc.resolution, "channels": gc.channels,
                           "w_dim": gc.w_dim, "width": self.cfg.width},
                "train_config": asdict(self.cfg), "step": self.step, "history": self.history,
                "model": self.E.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Resume (or, from a checkpoint packed without its optimiser, fine-tune)."""
        self.E.load_state_dict(state["model"])
        if "opt" in state:
            self.opt.load_state_dict(state["opt"])
        self.step, self.history = state["step"], state.get("history", [])


def evaluate_encoder(G: Generator, E: Encoder, bank_w: torch.Tensor, bank_x: torch.Tensor,
                     real: torch.Tensor) -> dict[str, float]:
    """Held-out latent MSE and pixel MSE on generated pairs, pixel MSE on real images."""
    E.eval()
    with torch.no_grad():
        w_hat = torch.cat([E(bank_x[i:i + 256]) for i in range(0, len(bank_x), 256)])
        rec_gen = torch.cat([decode(G, w_hat[i:i + 256]) for i in range(0, len(w_hat), 256)])
        w_real = torch.cat([E(real[i:i + 256]) for i in range(0, len(real), 256)])
        rec_real = torch.cat([decode(G, w_real[i:i + 256]) for i in range(0, len(real), 256)])
        baseline = decode(G, G.mapping.w_avg.unsqueeze(0)).expand_as(real)
    E.train()
    # Pixel errors are reported on images in [0, 1], the scale a person reads.
    return {
        "latent_mse_generated": F.mse_loss(w_hat, bank_w).item(),
        "pixel_mse_generated": F.mse_loss(rec_gen, bank_x).item() / 4,
        "pixel_mse_real": F.mse_loss(rec_real, real).item() / 4,
        "pixel_mse_real_average_w": F.mse_loss(baseline, real).item() / 4,
        "latent_prior_real": latent_prior_error(w_real, bank_w.mean(dim=0),
                                                bank_w.std(dim=0)).item(),
    }


def train_encoder(trainer: EncoderTrainer, real: ImageSet, held_out: ImageSet, out: Path,
                  generator_checkpoint: str, iterations: int, minutes: float | None = None,
                  checkpoint_every: int = 200,
                  record: RunRecord | None = None) -> dict[str, float]:
    """Train to ``iterations`` (or the time budget), checkpointing every
    ``checkpoint_every`` steps (``record`` notes each, and the end); return held-out
    metrics. SIGINT or
    SIGTERM stops after the current step with a checkpoint: TrainingInterruptedError."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = trainer.cfg
    bank_w, bank_x = make_bank(trainer.G, cfg.bank_size, cfg.seed + 1, "encoder: generated pairs")
    shell = bank_w.mean(dim=0), bank_w.std(dim=0)
    test_w, test_x = make_bank(trainer.G, 512, cfg.seed + 2, "encoder: held-out pairs")
    real_x = to_tensor(real.images).to(trainer.device)
    held_x = to_tensor(held_out.images).to(trainer.device)
    ckpt = out / "encoder.pt"
    deadline = None if minutes is None else time.monotonic() + minutes * 60

    def save() -> Path:
        save_checkpoint(trainer.state_dict(generator_checkpoint), ckpt)
        if record is not None:
            record.update(trainer.step)
        return ckpt

    with stop_on_signals() as stop, Progress(iterations, "encoder", trainer.step) as bar:
        while trainer.step < iterations:
            stats = trainer.train_step(bank_w, bank_x, real_x, shell)
            bar.update(1, latent=stats["latent"], real=stats["pixel_real"])
            stop.check(trainer.step, save)
            if trainer.step % checkpoint_every == 0:
                save()
            if deadline is not None and time.monotonic() > deadline:
                break
    metrics = evaluate_encoder(trainer.G, trainer.E, test_w, test_x, held_x)
    state = trainer.state_dict(generator_checkpoint)
    state["metrics"] = metrics
    save_checkpoint(state, ckpt)
    if record is not None:
        record.update(trainer.step, "finished", metrics)
    return metrics


def load_encoder(path: Path) -> tuple[Encoder, dict]:
    state = load_checkpoint(path, kind="encoder")
    model = Encoder(**state["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state
