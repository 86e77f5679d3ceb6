"""StyleGAN2 training: non-saturating logistic loss, lazy R1, generator EMA, style mixing.

Each iteration is one discriminator and one generator step on a batch. All randomness
of iteration ``k`` comes from ``(seed, k)``, so a run resumed from a checkpoint takes
exactly the step it would have taken without the interruption.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from styleprobe.data.datasets import ImageSet
from styleprobe.models.stylegan2 import Discriminator, Generator, GeneratorConfig, seeded_z
from styleprobe.training.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    stop_on_signals,
    to_tensor,
)
from styleprobe.training.grids import save_grid
from styleprobe.training.progress import Progress
from styleprobe.training.runrecord import RunRecord

log = logging.getLogger(__name__)


@dataclass
class GanTrainConfig:
    """Optimisation settings; defaults follow StyleGAN2-ADA's small-resolution config."""

    batch: int = 32
    lr: float = 0.0025
    r1_gamma: float | None = None  # None: 0.0002 * resolution^2 / batch, ADA's heuristic
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    seed: int = 0

    def gamma(self, resolution: int) -> float:
        if self.r1_gamma is not None:
            return self.r1_gamma
        return 0.0002 * resolution**2 / self.batch


class GanTrainer:
    """Holds G, D, G_ema and their optimisers; steps, checkpoints and resumes."""

    def __init__(self, gen_cfg: GeneratorConfig, train_cfg: GanTrainConfig,
                 device: str = "cpu") -> None:
        torch.manual_seed(train_cfg.seed)
        self.gen_cfg, self.cfg, self.device = gen_cfg, train_cfg, torch.device(device)
        self.G = Generator(gen_cfg).to(self.device)
        self.D = Discriminator(gen_cfg).to(self.device)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        ratio = train_cfg.r1_interval / (train_cfg.r1_interval + 1)  # lazy regularisation
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=train_cfg.lr, betas=(0.0, 0.99),
                                      eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=train_cfg.lr * ratio,
                                      betas=(0.0, 0.99**ratio), eps=1e-8)
        self.step = 0
        self.elapsed_s = 0.0  # training wall time, summed over resumed runs
        self.history: list[dict[str, float]] = []

    # -- one iteration -----------------------------------------------------------------
    def _ws(self, z: torch.Tensor, z2: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Mapped latents, with style mixing: a random crossover layer takes z2's w."""
        ws = self.G.broadcast(self.G.mapping(z))
        if torch.rand([], generator=gen).item() < self.cfg.style_mixing:
            num_ws = self.gen_cfg.num_ws
            cutoff = int(torch.randint(1, num_ws, [], generator=gen).item())
            ws2 = self.G.broadcast(self.G.mapping(z2))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def train_step(self, data: torch.Tensor) -> dict[str, float]:
        """One D step (with R1 every ``r1_interval``) and one G step; returns losses."""
        cfg, n = self.cfg, self.cfg.batch
        rng = np.random.default_rng([cfg.seed, self.step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        torch.manual_seed(int(rng.integers(2**62)))  # noise inputs
        real = data[torch.from_numpy(rng.choice(len(data), n, replace=len(data) < n))]
        real = real.to(self.device)

        def latents() -> tuple[torch.Tensor, torch.Tensor]:
            z = torch.randn(2, n, self.gen_cfg.z_dim, generator=gen)
            return z[0].to(self.device), z[1].to(self.device)

        # Discriminator: push real up, fake down.
        self.D.requires_grad_(True)
        with torch.no_grad():
            fake = self.G.synthesis(self._ws(*latents(), gen))
        loss_d = F.softplus(self.D(fake)).mean() + F.softplus(-self.D(real)).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        r1 = torch.zeros([])
        if self.step % cfg.r1_interval == 0:
            real_r1 = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(real_r1).sum(), real_r1, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_r1 = r1 * (cfg.gamma(self.gen_cfg.resolution) / 2) * cfg.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.opt_D.step()

        # Generator: non-saturating loss.
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self.D(self.G.synthesis(self._ws(*latents(), gen)))).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()

        self._update_ema()
        self.step += 1
        stats = {"step": float(self.step), "loss_d": loss_d.item(), "loss_g": loss_g.item(),
                 "r1": r1.item()}
        self.history.append(stats)
        return stats

    def _update_ema(self) -> None:
        cfg = self.cfg
        nimg = self.step * cfg.batch
        ema_nimg = min(cfg.ema_kimg * 1000, nimg * cfg.ema_rampup)
        beta = 0.5 ** (cfg.batch / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                p_ema.copy_(p.lerp(p_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                b_ema.copy_(b)

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "kind": "gan",
            "generator_config": self.gen_cfg.to_dict(),
            "train_config": asdict(self.cfg),
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "history": self.history,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
        }

    def save(self, path: Path) -> None:
        save_checkpoint(self.state_dict(), path)

    @classmethod
    def resume(cls, path: Path, device: str = "cpu") -> GanTrainer:
        state = load_checkpoint(path, kind="gan")
        trainer = cls(GeneratorConfig(**state["generator_config"]),
                      GanTrainConfig(**state["train_config"]), device)
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(trainer, name).load_state_dict(state[name])
        trainer.step, trainer.history = state["step"], state["history"]
        trainer.elapsed_s = state.get("elapsed_s", 0.0)
        return trainer


def train_gan(trainer: GanTrainer, data: ImageSet, out: Path, iterations: int,
              minutes: float | None = None, checkpoint_every: int = 100,
              grid_every: int = 200, record: RunRecord | None = None) -> Path:
    """Train until ``iterations`` in total (or the time budget); checkpoint every
    ``checkpoint_every`` steps and at the end (``record`` notes each, and the last losses).
    SIGINT or SIGTERM stops after the current step with a checkpoint:
    TrainingInterruptedError."""
    out.mkdir(parents=True, exist_ok=True)
    tensor = to_tensor(data.images)
    grid_z = seeded_z(32, trainer.gen_cfg.z_dim, seed=123).to(trainer.device)
    deadline = None if minutes is None else time.monotonic() + minutes * 60
    ckpt = out / "checkpoint.pt"

    def save() -> Path:
        trainer.save(ckpt)
        if record is not None:
            record.update(trainer.step)
        return ckpt

    with stop_on_signals() as stop, Progress(iterations, "gan", trainer.step) as bar:
        while trainer.step < iterations:
            started = time.monotonic()
            stats = trainer.train_step(tensor)
            trainer.elapsed_s += time.monotonic() - started
            bar.update(1, loss_d=stats["loss_d"], loss_g=stats["loss_g"])
            stop.check(trainer.step, save)
            if trainer.step % checkpoint_every == 0:
                save()
            if trainer.step % grid_every == 0:
                with torch.no_grad():
                    save_grid(trainer.G_ema(grid_z, noise_mode="const"),
                              out / f"samples_{trainer.step:06d}.png")
            if deadline is not None and time.monotonic() > deadline:
                log.info("time budget reached at step %d", trainer.step)
                break
    trainer.save(ckpt)
    if record is not None:
        last = trainer.history[-1] if trainer.history else {}
        record.update(trainer.step, "finished", {k: v for k, v in last.items() if k != "step"})
    with torch.no_grad():
        save_grid(trainer.G_ema(grid_z, noise_mode="const"), out / "samples_latest.png")
    return ckpt


def load_generator(path: Path) -> Generator:
    """The EMA generator of a GAN checkpoint, in eval mode."""
    state = load_checkpoint(path, kind="gan")
    G = Generator(GeneratorConfig(**state["generator_config"]))
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False)
