"""GPU benchmark, embedded: one explanation's latency and a cohort's throughput with the
models on a torch device, each model's achieved batch, and the device's peak memory.

- Explanation: :class:`~styleprobe.explain.engine.Explainer` on ``--device`` (the direction
  probed once, cold; then ``--repeats`` warm explanations of other phantoms): wall time,
  the model stages' time and the rendering's.
- Cohort: :class:`~styleprobe.cohort.runner.CohortRunner` on ``--images`` knee phantoms in
  chunks of ``--chunks`` images (each stage's model calls batched across the chunk), with
  pictures and without (``render=False``): images per second, and per model the rows per
  call (the achieved batch the backend was given).

    PYTHONPATH=services python3 benchmarks/gpu/bench_gpu.py [--device cuda] [--images 256]
        [--chunks 16,64] [--repeats 5] [--probe-samples 10000] [--out DIR]

Writes gpu.md and gpu.json to ``--out`` (default benchmarks/results). Needs only what the
embedded mode needs (torch, numpy, Pillow, scikit-learn, pyarrow), no server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.cohort.ledger import CohortLedger, CohortSpec
from styleprobe.cohort.runner import CohortRunner
from styleprobe.data.datasets import phantom_set
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import ProbeSettings
from styleprobe.storage.local import LocalStore

RESULTS = Path(__file__).resolve().parent.parent / "results"
REPOSITORY = Path(__file__).resolve().parent.parent.parent / "model_repository"


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def explanation(backend: LocalBackend, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A cold explanation (probes the direction), then ``--repeats`` warm ones."""
    marks: list[tuple[str, float]] = []
    explainer = Explainer(backend, LocalStore(work / "explain"),
                          progress=lambda stage, _f: marks.append((stage, time.perf_counter())))
    spec = explainer.spec(probe=ProbeSettings(samples=args.probe_samples))
    phantoms = phantom_set("knee", seed=7, size=backend.model_set.preprocessing.resolution)
    runs = []
    for index in range(args.repeats + 1):
        marks.clear()
        synchronize(args.device)
        started = time.perf_counter()
        explainer.explain(phantoms.sample(index).image, spec)
        synchronize(args.device)
        wall = time.perf_counter() - started
        first: dict[str, float] = {}
        for stage, moment in marks:
            first.setdefault(stage, moment)
        render = first.get("manifest", started + wall) - first.get("render", started + wall)
        models = first.get("render", started + wall) - first.get("encode", started)
        runs.append({"wall_s": wall, "models_s": models, "render_s": render})
    warm = runs[1:]
    return {"cold_s": round(runs[0]["wall_s"], 3),
            "warm_median_s": round(statistics.median(r["wall_s"] for r in warm), 4),
            "warm_models_median_s": round(statistics.median(r["models_s"] for r in warm), 4),
            "warm_render_median_s": round(statistics.median(r["render_s"] for r in warm), 4)}


def cohort(backend: LocalBackend, work: Path, args: argparse.Namespace, chunk: int,
           render: bool) -> dict[str, Any]:
    """The cohort of ``--images`` phantoms in chunks of ``chunk``; images/s and batches."""
    counting = CountingBackend(backend)
    store = LocalStore(work / f"cohort-{chunk}-{render}")
    phantoms = phantom_set("knee", seed=9, size=backend.model_set.preprocessing.resolution)
    images = {f"img{i:05d}.npy": phantoms.sample(i).image for i in range(args.images)}
    spec = CohortSpec(cohort_id=f"gpu-{chunk}-{'full' if render else 'rows'}", threshold=0.5,
                      render=render, job=Explainer(backend, store).spec(
                          probe=ProbeSettings(samples=args.probe_samples)))
    runner = CohortRunner(store, CohortLedger(store, spec.cohort_id), images.__getitem__,
                          lambda: counting)
    runner.prepare(spec)  # the direction, probed here: not timed
    counting.reset()
    synchronize(args.device)
    started = time.perf_counter()
    summary = runner.run(spec, list(images), chunk_size=chunk)
    synchronize(args.device)
    seconds = time.perf_counter() - started
    assert summary.done == args.images, summary
    batches = {model: round(counting.rows[model] / calls, 1)
               for model, calls in sorted(counting.calls.items())}
    return {"chunk": chunk, "pictures": render, "images": args.images,
            "seconds": round(seconds, 2), "images_per_s": round(args.images / seconds, 2),
            "calls": dict(Counter(counting.calls)), "rows_per_call": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model-set", default="knee-oa")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--chunks", default="16,64")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-samples", type=int, default=10_000)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))
    backend = LocalBackend(REPOSITORY, args.model_set, max_batch=args.max_batch,
                           device=args.device)
    name = (torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu")
    record: dict[str, Any] = {
        "device": f"{name} ({args.device})", "torch": torch.__version__,
        "platform": platform.platform(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "model_set": args.model_set,
        "command": "PYTHONPATH=services python3 benchmarks/gpu/bench_gpu.py "
                   f"--device {args.device} --images {args.images} --chunks {args.chunks} "
                   f"--repeats {args.repeats} --probe-samples {args.probe_samples} "
                   f"--max-batch {args.max_batch}"}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        work = Path(tmp)
        record["explanation"] = explanation(backend, work, args)
        print(record["explanation"], flush=True)
        record["cohorts"] = []
        for chunk in (int(c) for c in args.chunks.split(",")):
            for render in (False, True):
                record["cohorts"].append(cohort(backend, work, args, chunk, render))
                print(record["cohorts"][-1], flush=True)
    if args.device.startswith("cuda"):
        record["peak_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write(record, args.out)


def write(record: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(record, indent=2) + "\n")
    e = record["explanation"]
    lines = [
        "# GPU: embedded explanation latency and cohort throughput", "",
        f"`{record['command']}`", "",
        f"{record['device']}, torch {record['torch']}, {record['cpus']} CPUs, "
        f"{record['platform']}; model set {record['model_set']}; peak device memory "
        f"{record.get('peak_memory_mib', '-')} MiB.", "",
        "## One explanation (embedded, local store)", "",
        "| cold, probes the direction (s) | warm, median (s) | of which models (s) "
        "| of which rendering (s) |", "| ---: | ---: | ---: | ---: |",
        f"| {e['cold_s']} | {e['warm_median_s']} | {e['warm_models_median_s']} "
        f"| {e['warm_render_median_s']} |", "",
        "## Cohorts (embedded), each stage batched across a chunk", "",
        "| images | chunk | pictures | seconds | images/s | model calls | rows per call |",
        "| ---: | ---: | --- | ---: | ---: | --- | --- |",
        *[f"| {c['images']} | {c['chunk']} | {'yes' if c['pictures'] else 'no'} "
          f"| {c['seconds']} | {c['images_per_s']} "
          f"| {', '.join(f'{k} {v}' for k, v in c['calls'].items())} "
          f"| {', '.join(f'{k} {v}' for k, v in c['rows_per_call'].items())} |"
          for c in record["cohorts"]],
    ]
    (out / "gpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
