"""Benchmark: GAN training throughput (images per second) of the bundled recipes, the
recipe the bundled sets were trained with against the new one, on the same hardware.

    .venv/bin/python benchmarks/bench_training.py [--device cuda] [--steps 16] [--threads 1]
                                                  [--variants current,new,...]

Variants (see VARIANTS): ``current`` is the recipe of the bundled sets (batch 64 for
knees, 128 for histology, fp32, no augmentation, fixed lr); ``new`` is this version's
default for the same batch (ADA on, as below 50 000 images; on CUDA bf16 autocast and
channels-last); on CUDA the new recipe is also timed at large batches and compiled
(``reduce-overhead``: CUDA graphs). Each variant trains a fresh GAN of the set's
architecture on phantoms for ``--steps`` timed iterations after two untimed ones (the first
of which runs the lazy R1 step and any compilation); with the default 16 the timed ones
include one R1 step, as training does. Writes benchmarks/results/training.md and
training.json (on a GPU: training-cuda.md and training-cuda.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from styleprobe.data.datasets import phantom_set, render
from styleprobe.models.stylegan2 import GeneratorConfig
from styleprobe.training.checkpoint import to_tensor
from styleprobe.training.gan import GanTrainConfig, GanTrainer

RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 2
TARGET_SPEEDUP_GPU = 20.0  # issue 19: the new recipe at least 20x the current on a GPU


@dataclass(frozen=True)
class Recipe:
    """A bundled set's GAN: architecture and the batch it was trained with."""

    phantoms: str
    resolution: int
    channels: int
    batch: int

    def generator(self) -> GeneratorConfig:
        return GeneratorConfig(resolution=self.resolution, channels=self.channels, z_dim=128,
                               w_dim=128, channel_base=1024, channel_max=128)


RECIPES = {"knee-oa": Recipe("knee", 64, 1, 64),
           "histology-tumour": Recipe("histology", 32, 3, 128)}


def variant_config(name: str, recipe: Recipe) -> GanTrainConfig:
    """The training configuration of a named variant."""
    if name == "current":  # as the bundled sets were trained (before ADA and scaling)
        return GanTrainConfig(batch=recipe.batch, lr=0.0025, ema_kimg=10.0, ada=False,
                              precision="fp32", channels_last=False)
    if name == "new":
        return GanTrainConfig(batch=recipe.batch)
    if name.startswith("new-b"):  # new-b1024, new-b1024-compiled
        parts = name.split("-")
        return GanTrainConfig(batch=int(parts[1][1:]),
                              compile="reduce-overhead" if "compiled" in parts else "")
    raise ValueError(f"unknown variant {name!r}")


VARIANTS = {"cpu": ["current", "new"],
            "cuda": ["current", "new", "new-b512", "new-b1024", "new-b2048",
                     "new-b1024-compiled"]}


def _timed_step(trainer: GanTrainer, data: torch.Tensor) -> tuple[float, dict[str, float]]:
    """Seconds of one training step (the device synchronised before and after)."""
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    start = time.perf_counter()
    stats = trainer.train_step(data)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize(trainer.device)
    return time.perf_counter() - start, stats


def bench(recipe: Recipe, variants: list[str], device: str, steps: int,
          data: torch.Tensor) -> list[dict[str, Any]]:
    """Every variant's throughput. Their steps are interleaved (one of each in turn), so
    that on a shared machine a change of load falls on all of them alike."""
    trainers: dict[str, GanTrainer] = {}
    for variant in variants:
        try:
            trainer = GanTrainer(recipe.generator(), variant_config(variant, recipe),
                                 device=device)
            for _ in range(WARMUP):
                _timed_step(trainer, data.to(trainer.device))
            trainers[variant] = trainer
        except RuntimeError as exc:  # e.g. out of memory, or a compile failure
            print(f"{variant} failed: {exc}", flush=True)
    on_device = data.to(device)
    seconds = dict.fromkeys(trainers, 0.0)
    last: dict[str, dict[str, float]] = {}
    for _ in range(steps):
        for variant, trainer in trainers.items():
            took, last[variant] = _timed_step(trainer, on_device)
            seconds[variant] += took
    rows = []
    for variant, trainer in trainers.items():
        cfg = trainer.cfg
        rows.append({
            "variant": variant, "batch": cfg.batch, "lr": cfg.learning_rate(),
            "ada": bool(trainer.ada_on), "bf16": trainer.bf16,
            "channels_last": trainer.memory_format == torch.channels_last,
            "compile": cfg.compile, "steps": steps, "seconds": seconds[variant],
            "iterations_per_s": steps / seconds[variant],
            "images_per_s": steps * cfg.batch / seconds[variant],
            "last_losses": {k: last[variant][k] for k in ("loss_d", "loss_g")},
            "peak_memory_gib": (torch.cuda.max_memory_allocated(trainer.device) / 2**30
                                if trainer.device.type == "cuda" else None)})
    return rows


def write_report(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
                 machine: dict[str, Any]) -> Path:
    gpu = args.device.startswith("cuda")
    stem = "training-cuda" if gpu else "training"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"machine": machine, "results": results}, indent=2) + "\n")
    on = f"{machine['gpu']}, " if gpu else f"{machine['threads']} torch thread(s), "
    lines = [
        "# Training benchmark", "",
        f"`benchmarks/bench_training.py --device {args.device} --steps {args.steps}`: {on}"
        f"{machine['platform']}, {machine['cpus']} CPUs, torch {machine['torch']}, load "
        f"average at start {', '.join(f'{x:.1f}' for x in machine['load_average'])}. Fresh "
        f"GANs of the bundled sets' architecture (w 128-d, channel base 1024, max 128); "
        f"{args.steps} timed iterations (one D step, one G step; lazy R1 every 16) after "
        f"{WARMUP} untimed ones, the variants' steps interleaved (one of each in turn, so "
        "that a change of load on a shared machine falls on all alike); load average at the "
        f"end {', '.join(f'{x:.1f}' for x in machine['load_average_at_end'])}. "
        "`current`: the recipe the bundled sets were trained with; "
        "`new`: this version's default at the same batch; `new-bN`: at batch N; "
        "`compiled`: torch.compile reduce-overhead (CUDA graphs).", "",
        "| model set | variant | batch | lr | ADA | bf16 | channels-last | iterations/s | "
        "images/s | × current |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in results.items():
        base = next((r["images_per_s"] for r in rows if r["variant"] == "current"), None)
        for r in rows:
            ratio = f"{r['images_per_s'] / base:.2f}×" if base else "—"
            lines.append(
                f"| {name} | {r['variant']} | {r['batch']} | {r['lr']:.4f} | "
                f"{'on' if r['ada'] else 'off'} | {'yes' if r['bf16'] else 'no'} | "
                f"{'yes' if r['channels_last'] else 'no'} | {r['iterations_per_s']:.2f} | "
                f"{r['images_per_s']:.0f} | {ratio} |")
    if gpu:
        lines += ["", f"Goal: the best new variant at least {TARGET_SPEEDUP_GPU:g}× the current "
                  "recipe's images per second."]
    else:
        lines += ["", "On the CPU the arithmetic per image is the same at any batch, so the "
                  "recipes run at about the same images per second; ADA adds its resampling "
                  "(a few per cent). The hardware paths (bf16, channels-last, large batches, "
                  "CUDA graphs) pay on a GPU: `scripts/train_on_gpu.sh` runs this benchmark "
                  "with `--device cuda` first and writes training-cuda.md."]
    report = RESULTS / f"{stem}.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--variants", default=None,
                        help="comma-separated (default: " + "; ".join(
                            f"{k}: {','.join(v)}" for k, v in VARIANTS.items()) + ")")
    parser.add_argument("--sets", default=",".join(RECIPES))
    parser.add_argument("--images", type=int, default=2000, help="phantoms to train on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kind = "cuda" if args.device.startswith("cuda") else "cpu"
    variants = args.variants.split(",") if args.variants else VARIANTS[kind]
    machine: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(),
               "threads": args.threads, "torch": torch.__version__,
               "load_average": os.getloadavg(), "device": args.device,
               "gpu": torch.cuda.get_device_name(args.device) if kind == "cuda" else None}
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.sets.split(","):
        recipe = RECIPES[name]
        data = to_tensor(render(phantom_set(recipe.phantoms, seed=0, size=recipe.resolution),
                                args.images).images)
        results[name] = bench(recipe, variants, args.device, args.steps, data)
        print(json.dumps({name: results[name]}), flush=True)
    machine["load_average_at_end"] = os.getloadavg()
    print(write_report(results, args, machine).read_text())


if __name__ == "__main__":
    main()
