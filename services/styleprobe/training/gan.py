"""StyleGAN2 training: non-saturating logistic loss, lazy R1, generator EMA, style mixing,
adaptive discriminator augmentation (ADA), and the hardware paths: bf16 autocast,
channels-last, ``torch.compile`` (CUDA graphs with ``reduce-overhead``), the data on the
device, and several processes with DistributedDataParallel (:mod:`.distributed`).

Each iteration is one discriminator and one generator step on a batch. All randomness
of iteration ``k`` comes from ``(seed, k)``, so a run resumed from a checkpoint takes
exactly the step it would have taken without the interruption; in several processes
each takes its rows of the same global batch (the noise inputs excepted: each process
draws its own).

The recipe scales with the batch: by default the learning rate grows with its square
root from 0.0025 at 32 (at most twice that), the EMA half-life with the batch and the R1
weight shrinks with it (StyleGAN2-ADA's heuristics).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from styleprobe.data.datasets import ImageSet
from styleprobe.models.stylegan2 import Discriminator, Generator, GeneratorConfig, seeded_z
from styleprobe.training.augment import AdaptiveProbability, augment
from styleprobe.training.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    stop_on_signals,
    to_tensor,
)
from styleprobe.training.distributed import (
    World,
    all_sum,
    any_process,
    check_batch,
    shard_rows,
)
from styleprobe.training.grids import save_grid
from styleprobe.training.progress import Progress
from styleprobe.training.runrecord import RunRecord

log = logging.getLogger(__name__)
ADA_MAX_IMAGES = 50_000  # ADA is on by default for data sets smaller than this
BASE_BATCH, BASE_LR = 32, 0.0025
M = TypeVar("M", bound=nn.Module)


@dataclass
class GanTrainConfig:
    """Optimisation settings; defaults follow StyleGAN2-ADA's small-resolution config."""

    batch: int = 32
    lr: float | None = None  # None: 0.0025 * sqrt(batch / 32), at most 0.005
    r1_gamma: float | None = None  # None: 0.0002 * resolution^2 / batch, ADA's heuristic
    r1_interval: int = 16
    style_mixing: float = 0.9
    ema_kimg: float | None = None  # None: 10 * batch / 32, ADA's heuristic
    ema_rampup: float = 0.05
    seed: int = 0
    ada: bool | None = None  # None: on for data sets below ADA_MAX_IMAGES images
    ada_target: float = 0.6
    ada_kimg: float = 500.0  # p can move from 0 to 1 within this many thousand images
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on the CPU; "bf16"; "fp32"
    channels_last: bool | None = None  # None: on CUDA
    compile: str = ""  # a torch.compile mode ("default", "reduce-overhead", ...); "": off

    def gamma(self, resolution: int) -> float:
        if self.r1_gamma is not None:
            return self.r1_gamma
        return 0.0002 * resolution**2 / self.batch

    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return BASE_LR * min(math.sqrt(self.batch / BASE_BATCH), 2.0)

    def ema_images(self) -> float:
        return 1000 * (self.ema_kimg if self.ema_kimg is not None
                       else 10.0 * self.batch / BASE_BATCH)

    def bf16(self, device: torch.device) -> bool:
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, not {self.precision!r}")
        return self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")


def _placed(module: M, device: torch.device, memory_format: torch.memory_format) -> M:
    """``module`` on ``device``, its 4-d parameters in ``memory_format``."""
    module.to(device)
    if memory_format != torch.contiguous_format:
        module.to(memory_format=memory_format)  # type: ignore[call-overload]
    return module


class _Generate(nn.Module):
    """z (and z2 for style mixing from layer ``cutoff`` on) -> images: the generator's
    training forward, one module so that DistributedDataParallel can wrap it. ``cutoff``
    is a tensor, and both codes are always mapped, so that a compiled graph does not
    change with it."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, z2: torch.Tensor, cutoff: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):  # mapping and its w_avg in fp32
            ws = self.G.broadcast(self.G.mapping(torch.cat([z, z2])))
            ws, ws2 = ws[:len(z)], ws[len(z):]
            layer = torch.arange(ws.shape[1], device=ws.device)
            ws = torch.where((layer < cutoff)[None, :, None], ws, ws2)
        return self.G.synthesis(ws)


class GanTrainer:
    """Holds G, D, G_ema and their optimisers; steps, checkpoints and resumes."""

    def __init__(self, gen_cfg: GeneratorConfig, train_cfg: GanTrainConfig,
                 device: str = "cpu", world: World | None = None) -> None:
        torch.manual_seed(train_cfg.seed)
        self.gen_cfg, self.cfg, self.device = gen_cfg, train_cfg, torch.device(device)
        self.world = world or World()
        if self.world.distributed:
            check_batch(train_cfg.batch, self.world)
        self.bf16 = train_cfg.bf16(self.device)
        self.memory_format = (torch.channels_last if (train_cfg.channels_last is None
                                                      and self.device.type == "cuda")
                              or train_cfg.channels_last else torch.contiguous_format)
        self.G = _placed(Generator(gen_cfg), self.device, self.memory_format)
        self.D = _placed(Discriminator(gen_cfg), self.device, self.memory_format)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        lr = train_cfg.learning_rate()
        ratio = train_cfg.r1_interval / (train_cfg.r1_interval + 1)  # lazy regularisation
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=(0.0, 0.99), eps=1e-8)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr * ratio,
                                      betas=(0.0, 0.99**ratio), eps=1e-8)
        # The modules a step calls: DDP-wrapped when distributed (G's training forward and
        # D while it learns; D frozen in G's step needs no wrapper), then compiled if asked
        # (all but R1's D: a compiled graph has no double backward).
        self.generate: nn.Module = _Generate(self.G)
        self.D_learn: nn.Module = self.D
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.generate = nn.parallel.DistributedDataParallel(
                self.generate, device_ids=ids, broadcast_buffers=False)
            self.D_learn = nn.parallel.DistributedDataParallel(
                self.D, device_ids=ids, broadcast_buffers=False)
        self.discriminate: nn.Module = self.D_learn
        self.D_frozen: nn.Module = self.D
        if train_cfg.compile:
            self.generate = self._compiled(self.generate)
            self.discriminate = self._compiled(self.D_learn)
            self.D_frozen = self._compiled(self.D)
        self.ada = AdaptiveProbability(target=train_cfg.ada_target, speed_kimg=train_cfg.ada_kimg)
        self.ada_on: bool | None = train_cfg.ada  # decided on the first step if None
        self.step = 0
        self.elapsed_s = 0.0  # training wall time, summed over resumed runs
        self.history: list[dict[str, float]] = []

    def _compiled(self, module: nn.Module) -> nn.Module:
        compiled: nn.Module = torch.compile(module, mode=self.cfg.compile)  # type: ignore[assignment]
        return compiled

    # -- one iteration -----------------------------------------------------------------
    def _autocast(self) -> Any:
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _cutoff(self, gen: torch.Generator) -> torch.Tensor:
        """Style mixing: a random crossover layer, or none (``num_ws``), on the device."""
        num_ws = self.gen_cfg.num_ws
        cutoff = num_ws
        if torch.rand([], generator=gen).item() < self.cfg.style_mixing:
            cutoff = int(torch.randint(1, num_ws, [], generator=gen).item())
        return torch.tensor(cutoff, device=self.device)

    def _augment(self, images: torch.Tensor, gen: torch.Generator,
                 rows: torch.Tensor) -> torch.Tensor:
        """ADA on this process's ``rows`` of a global batch; the parameters are drawn for
        the whole batch, so every process augments its rows as one process would."""
        if not self.ada_on:
            return images
        return augment(images, self.ada.p, gen, rows, self.cfg.batch)

    def train_step(self, data: torch.Tensor) -> dict[str, float]:
        """One D step (with R1 every ``r1_interval``) and one G step; returns losses.
        ``data`` may live on the training device already (it should, on a GPU)."""
        cfg, n = self.cfg, self.cfg.batch
        if self.ada_on is None:
            self.ada_on = len(data) < ADA_MAX_IMAGES
        rng = np.random.default_rng([cfg.seed, self.step])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        noise_seed = int(rng.integers(2**62))
        torch.manual_seed(noise_seed + self.world.rank)  # noise inputs
        rows = shard_rows(n, self.world)
        index = torch.from_numpy(rng.choice(len(data), n, replace=len(data) < n))[rows]
        real = data[index.to(data.device)].to(self.device, memory_format=self.memory_format)
        z = torch.randn(4, n, self.gen_cfg.z_dim, generator=gen)[:, rows].to(self.device)
        cutoff_d, cutoff_g = self._cutoff(gen), self._cutoff(gen)
        aug_seeds = torch.randint(2**62, [4], generator=gen).tolist()

        def aug(images: torch.Tensor, k: int) -> torch.Tensor:
            return self._augment(images, torch.Generator().manual_seed(aug_seeds[k]), rows)

        # Discriminator: push real up, fake down.
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.generate(z[0], z[1], cutoff_d)
        with self._autocast():
            fake_logits = self.discriminate(aug(fake, 0)).float()
            real_logits = self.discriminate(aug(real, 1)).float()
        loss_d = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        if self.ada_on:
            self.ada.observe(real_logits)
        r1 = torch.zeros([])
        if self.step % cfg.r1_interval == 0:  # in fp32: a gradient penalty needs the range
            real_r1 = real.detach().requires_grad_(True)
            logits = self.D_learn(aug(real_r1, 2))
            (grad,) = torch.autograd.grad(logits.sum(), real_r1, create_graph=True)
            r1 = grad.square().sum(dim=[1, 2, 3]).mean()
            loss_r1 = (r1 * (cfg.gamma(self.gen_cfg.resolution) / 2) * cfg.r1_interval
                       + logits.mean() * 0)  # every D parameter in the graph, for DDP
            self.opt_D.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.opt_D.step()

        # Generator: non-saturating loss.
        self.D.requires_grad_(False)
        with self._autocast():
            fake_logits = self.D_frozen(aug(self.generate(z[2], z[3], cutoff_g), 3)).float()
        loss_g = F.softplus(-fake_logits).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()

        self._update_ema()
        self.step += 1
        losses = all_sum([loss_d.item(), loss_g.item(), r1.item()], self.device)
        stats = {"step": float(self.step),
                 **{k: v / self.world.size for k, v in zip(("loss_d", "loss_g", "r1"),
                                                            losses, strict=True)}}
        if self.ada_on:
            if self.ada.due(self.step):
                totals = all_sum([self.ada.sign_sum, self.ada.count], self.device)
                stats["ada_r_t"] = self.ada.update(n, *totals)
            stats["ada_p"] = self.ada.p
        self.history.append(stats)
        return stats

    def _update_ema(self) -> None:
        cfg = self.cfg
        nimg = self.step * cfg.batch
        ema_nimg = min(cfg.ema_images(), nimg * cfg.ema_rampup)
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
            "ada": {"on": self.ada_on, "p": self.ada.p, "sign_sum": self.ada.sign_sum,
                    "count": self.ada.count},
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
        }

    def save(self, path: Path) -> None:
        if self.world.main:
            save_checkpoint(self.state_dict(), path)

    @classmethod
    def resume(cls, path: Path, device: str = "cpu", world: World | None = None) -> GanTrainer:
        state = load_checkpoint(path, kind="gan")
        trainer = cls(GeneratorConfig(**state["generator_config"]),
                      GanTrainConfig(**state["train_config"]), device, world)
        for name in ("G", "D", "G_ema", "opt_G", "opt_D"):
            getattr(trainer, name).load_state_dict(state[name])
        trainer.step, trainer.history = state["step"], state["history"]
        trainer.elapsed_s = state.get("elapsed_s", 0.0)
        ada = state.get("ada", {"on": False, "p": 0.0, "sign_sum": 0.0, "count": 0.0})
        trainer.ada_on = ada["on"]
        trainer.ada.p, trainer.ada.sign_sum, trainer.ada.count = (ada["p"], ada["sign_sum"],
                                                                   ada["count"])
        return trainer


def train_gan(trainer: GanTrainer, data: ImageSet, out: Path, iterations: int,
              minutes: float | None = None, checkpoint_every: int = 100,
              grid_every: int = 200, record: RunRecord | None = None) -> Path:
    """Train until ``iterations`` in total (or the time budget); checkpoint every
    ``checkpoint_every`` steps and at the end (``record`` notes each, and the last losses).
    SIGINT or SIGTERM stops after the current step with a checkpoint:
    TrainingInterruptedError."""
    main = trainer.world.main
    if main:
        out.mkdir(parents=True, exist_ok=True)
    tensor = to_tensor(data.images).to(trainer.device)  # the data on the device, once
    grid_z = seeded_z(32, trainer.gen_cfg.z_dim, seed=123).to(trainer.device)
    deadline = None if minutes is None else time.monotonic() + minutes * 60
    ckpt = out / "checkpoint.pt"

    def save() -> Path:
        trainer.save(ckpt)
        if record is not None and main:
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
            if trainer.step % grid_every == 0 and main:
                with torch.no_grad():
                    save_grid(trainer.G_ema(grid_z, noise_mode="const"),
                              out / f"samples_{trainer.step:06d}.png")
            late = deadline is not None and time.monotonic() > deadline
            if deadline is not None and any_process(late, trainer.device):
                log.info("time budget reached at step %d", trainer.step)
                break
    trainer.save(ckpt)
    if record is not None and main:
        last = trainer.history[-1] if trainer.history else {}
        record.update(trainer.step, "finished", {k: v for k, v in last.items() if k != "step"})
    if main:
        with torch.no_grad():
            save_grid(trainer.G_ema(grid_z, noise_mode="const"), out / "samples_latest.png")
    return ckpt


def load_generator(path: Path) -> Generator:
    """The EMA generator of a GAN checkpoint, in eval mode."""
    state = load_checkpoint(path, kind="gan")
    G = Generator(GeneratorConfig(**state["generator_config"]))
    G.load_state_dict(state["G_ema"])
    return G.eval().requires_grad_(False)
