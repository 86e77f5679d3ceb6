"""Benchmark: attribute discovery (AttFind over StyleSpace) on the bundled model sets — the
first ranking against the stored one, and one image's attribute traversals — in one process.

    .venv/bin/python benchmarks/bench_attributes.py [--attribute-samples 2] [--top 5]
                                                    [--threads 1] [--device cuda]

Writes benchmarks/results/attributes.md and attributes.json (on a GPU, attributes-cuda.*).
The ranking decodes 2 x samples x candidate channels frames, so its time grows linearly
with --attribute-samples; the second call reads the stored ranking and calls no model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.explain.attributes import ensure_attributes, load_discovery, traverse_attributes
from styleprobe.explain.spec import AttributeSettings, LambdaGrid
from styleprobe.modelset import list_model_sets
from styleprobe.storage.local import LocalStore

BUNDLED = ("knee-oa", "histology-tumour")
RESULTS = Path(__file__).resolve().parent / "results"


def bench_set(repository: Path, name: str, settings: AttributeSettings,
              device: str) -> dict[str, object]:
    backend = LocalBackend(repository, name, device=device)
    counting = CountingBackend(backend)
    target = backend.model_set.default_target
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        for _ in range(2):
            counting.reset()
            start = time.perf_counter()
            key = ensure_attributes(counting, store, target, settings)
            runs.append({"seconds": time.perf_counter() - start,
                         "rows": dict(counting.rows)})
        discovery = load_discovery(store, key)
    z = np.random.default_rng(1).standard_normal((1, backend.model_set.z_dim))
    w = backend.mapping(z.astype(np.float32))[0]
    lambdas = LambdaGrid().values()
    counting.reset()
    start = time.perf_counter()
    traverse_attributes(counting, w, discovery, lambdas)
    traversal = {"seconds": time.perf_counter() - start, "rows": dict(counting.rows),
                 "frames": len(lambdas) * len(discovery.attributes)}
    backend.close()
    frames = runs[0]["rows"].get("stylesynthesis", 0)
    return {"model_set": name, "target": target, "candidates": discovery.candidates,
            "first": runs[0], "second": runs[1],
            "ms_per_ranking_frame": 1000 * runs[0]["seconds"] / max(frames, 1),
            "traversal": traversal,
            "attributes": [a.name for a in discovery.attributes]}


def markdown(report: dict[str, object]) -> str:
    lines = ["# Attribute discovery", "",
             f"{report['machine']}; torch threads {report['threads']}; device "
             f"{report['device']}; settings {report['settings']}. Load on the machine while "
             "measuring: see `load_average` in the JSON.", "",
             "| Model set | Candidates | First ranking (s) | Frames decoded | ms per frame | "
             "Stored ranking (s, model rows) | One image's traversals (s, frames) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["sets"]:  # type: ignore[attr-defined]
        lines.append(
            f"| {r['model_set']} | {r['candidates']} | {r['first']['seconds']:.1f} | "
            f"{r['first']['rows'].get('stylesynthesis', 0)} | {r['ms_per_ranking_frame']:.2f} "
            f"| {r['second']['seconds']:.3f}, {sum(r['second']['rows'].values())} | "
            f"{r['traversal']['seconds']:.2f}, {r['traversal']['frames']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attribute-samples", type=int, default=2)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repository = Path(Settings.from_env().model_repository)
    settings = AttributeSettings(top=args.top, samples=args.attribute_samples)
    present = set(list_model_sets(repository))
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores", "threads": args.threads,
        "device": args.device, "settings": vars(args), "load_average": os.getloadavg(),
        "sets": [bench_set(repository, name, settings, args.device)
                 for name in BUNDLED if name in present],
        "skipped": [name for name in BUNDLED if name not in present],
    }
    suffix = "-cuda" if args.device.startswith("cuda") else ""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"attributes{suffix}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"attributes{suffix}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
