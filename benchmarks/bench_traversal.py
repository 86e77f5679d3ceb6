"""Benchmark: a 17-frame traversal decoded and classified in one batch against the
per-frame loop a notebook would write, and the direction probe's cost on its first call
against its second (cached) call, on the bundled model sets, in one process.

    .venv/bin/python benchmarks/bench_traversal.py [--repeats 7] [--threads 1,2]
                                                   [--probe-samples 10000] [--device cuda]

Writes benchmarks/results/traversal.md and traversal.json (on a GPU, traversal-cuda.md
and traversal-cuda.json). Model sets missing from the model repository are reported as
skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.data.datasets import phantom_set
from styleprobe.explain.direction import ensure_direction, load_direction
from styleprobe.explain.inputs import to_model_layout
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import LambdaGrid, ProbeSettings
from styleprobe.explain.traverse import decode_frames
from styleprobe.modelset import list_model_sets
from styleprobe.storage.local import LocalStore

BUNDLED = {"knee-oa": "knee", "histology-tumour": "histology"}
RESULTS = Path(__file__).resolve().parent / "results"
WARMUP = 3  # TorchScript specialises on the first calls with each batch size
TARGET_SPEEDUP = 3.0


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn``, after :data:`WARMUP` untimed ones."""
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def per_frame_loop(backend: LocalBackend, w: np.ndarray, alpha: np.ndarray,
                   lambdas: np.ndarray, class_index: int) -> np.ndarray:
    """The notebook way: one frame at a time, decode then classify."""
    probabilities = []
    for lam in lambdas:
        image = backend.synthesis((w + lam * alpha)[None].astype(np.float32))
        probabilities.append(target_probability(backend.classifier(image), class_index)[0])
    return np.array(probabilities)


def diseased_latent(backend: LocalBackend, phantoms: str) -> np.ndarray:
    """``E(x)`` of the first diseased phantom of a seed no model was trained on."""
    prep = backend.model_set.preprocessing
    source = phantom_set(phantoms, seed=4_242, size=prep.resolution)
    sample = next(s for s in map(source.sample, range(1000)) if s.label == 1)
    return backend.encoder(to_model_layout(sample.image[None], prep))[0]


def bench_probe(backend: LocalBackend, target: str, samples: int) -> dict[str, object]:
    """Time and model calls of ensure_direction: first call probes, second hits the store."""
    counting = CountingBackend(backend)
    probe = ProbeSettings(samples=samples)
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        runs = []
        for _ in range(2):
            counting.reset()
            start = time.perf_counter()
            key = ensure_direction(counting, store, target, probe)
            runs.append({"seconds": time.perf_counter() - start, "calls": dict(counting.calls),
                         "rows": dict(counting.rows)})
        direction = load_direction(store, key)
    return {"samples": samples, "first": runs[0], "second": runs[1],
            "auc": direction.auc, "alpha": direction.vector}


def bench_set(repository: Path, name: str, phantoms: str, repeats: int, threads: list[int],
              probe_samples: int, device: str) -> dict[str, object]:
    backend = LocalBackend(repository, name, device=device)
    target = backend.model_set.default_target
    class_index = backend.model_set.classifier.class_index(target)
    torch.set_num_threads(threads[0])
    probe = bench_probe(backend, target, probe_samples)
    alpha = np.asarray(probe.pop("alpha"), np.float32)
    w = diseased_latent(backend, phantoms)
    lambdas = LambdaGrid().values()
    traversal = []
    for n in threads:
        torch.set_num_threads(n)
        batched = timed(lambda: decode_frames(backend, w, alpha, lambdas, class_index), repeats)
        loop = timed(lambda: per_frame_loop(backend, w, alpha, lambdas, class_index), repeats)
        agree = np.abs(decode_frames(backend, w, alpha, lambdas, class_index).probabilities
                       - per_frame_loop(backend, w, alpha, lambdas, class_index)).max()
        traversal.append({
            "threads": n, "frames": len(lambdas),
            "batched_ms": 1000 * statistics.median(batched),
            "loop_ms": 1000 * statistics.median(loop),
            "speedup": statistics.median(loop) / statistics.median(batched),
            "max_probability_difference": float(agree),
        })
    backend.close()
    return {"model_set": name, "target": target, "resolution":
            backend.model_set.preprocessing.resolution, "probe": probe, "traversal": traversal}


def write_report(results: list[dict], skipped: list[str], args: argparse.Namespace) -> Path:
    """Write the markdown and JSON reports; return the markdown's path."""
    device = torch.device(args.device)
    gpu = device.type != "cpu"
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "load_average": os.getloadavg(),
               "repeats": args.repeats, "device": args.device,
               "gpu": torch.cuda.get_device_name(device) if gpu else None}
    stem = f"traversal-{device.type}" if gpu else "traversal"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"machine": machine, "results": results, "skipped": skipped}, indent=2) + "\n")
    on = f"{machine['gpu']} ({args.device}), " if gpu else ""
    lines = [
        "# Traversal benchmark", "",
        f"`benchmarks/bench_traversal.py --device {args.device}`: {on}{machine['platform']}, "
        f"{machine['cpus']} CPUs, torch {machine['torch']}, load average at start "
        f"{', '.join(f'{x:.1f}' for x in machine['load_average'])}; median of "
        f"{args.repeats} runs after {WARMUP} warm-up runs. Target: batched ≥ "
        f"{TARGET_SPEEDUP:g}× the per-frame loop.", "",
        "## 17-frame traversal: one batch against the per-frame loop", "",
        "| model set | threads | batched (ms) | per-frame loop (ms) | speed-up | target met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        for t in r["traversal"]:
            lines.append(f"| {r['model_set']} ({r['resolution']} px) | {t['threads']} | "
                         f"{t['batched_ms']:.1f} | {t['loop_ms']:.1f} | {t['speedup']:.2f}× | "
                         f"{'yes' if t['speedup'] >= TARGET_SPEEDUP else 'no'} |")
    if not gpu and any(t["speedup"] < TARGET_SPEEDUP for r in results for t in r["traversal"]):
        lines += ["", "Below the target here: on a CPU a frame costs the same arithmetic in a "
                  "batch or alone, so one batch only saves the per-call overhead and gives "
                  "intra-op threads enough work (compare the thread counts); the per-frame "
                  "loop pays a model round trip per frame, which costs far more on a GPU or "
                  "over the network to Triton."]
    lines += ["", "## Direction probe: first call against second call", "",
              "| model set | samples | first call (s) | model calls, first | second call (s) | "
              "model calls, second | held-out AUC |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        p = r["probe"]
        first = ", ".join(f"{k} {v} ({p['first']['rows'][k]} rows)"
                          for k, v in p["first"]["calls"].items())
        lines.append(f"| {r['model_set']} | {p['samples']} | {p['first']['seconds']:.1f} | "
                     f"{first} | {p['second']['seconds']:.4f} | "
                     f"{sum(p['second']['calls'].values())} | {p['auc']:.3f} |")
    if skipped:
        lines += ["", f"Skipped (not in the model repository): {', '.join(skipped)}."]
    report = RESULTS / f"{stem}.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> None:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}",
                        help="comma-separated torch thread counts to time the traversal with")
    parser.add_argument("--probe-samples", type=int, default=settings.probe_samples)
    parser.add_argument("--device", default=settings.local_device,
                        help="torch device the models run on (default: STYLEPROBE_LOCAL_DEVICE)")
    args = parser.parse_args()
    threads = sorted({int(t) for t in args.threads.split(",")})
    repository = Path(settings.model_repository)
    available = list_model_sets(repository)
    results, skipped = [], []
    for name, phantoms in BUNDLED.items():
        if name not in available:
            skipped.append(name)
            continue
        results.append(bench_set(repository, name, phantoms, args.repeats, threads,
                                 args.probe_samples, args.device))
    print(write_report(results, skipped, args).read_text())


if __name__ == "__main__":
    main()
