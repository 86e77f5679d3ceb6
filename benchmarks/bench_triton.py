"""Benchmark: the models behind Triton against the same models in process.

1. A 17-frame traversal (decode and classify in one batch): Triton's decode ensemble over
   gRPC against :class:`~styleprobe.backends.local.LocalBackend`, and their ratio.
2. Eight explanations at once, each in its own process (as Celery workers run them),
   sharing one stored direction: the batch size Triton achieved, from its metrics
   (``nv_inference_count`` / ``nv_inference_exec_count``; target ≥ 4), against the same
   eight explanations with the models in process.

    .venv/bin/python benchmarks/bench_triton.py [--model-set knee-oa ...] [--repeats 20]
                                                [--explanations 8] [--probe-samples 2000]

Starts its own tritonserver (CPU repository, Python backend) on free ports, serving every
set at once (default: every set of the model repository); writes
benchmarks/results/triton.md and triton.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_traversal import WARMUP, timed  # the same warm-up-then-time loop

from styleprobe.backends.local import LocalBackend
from styleprobe.backends.triton import TritonBackend
from styleprobe.config import Settings
from styleprobe.explain.direction import ensure_direction
from styleprobe.explain.engine import Explainer
from styleprobe.explain.inputs import from_model_layout
from styleprobe.explain.spec import JobSpec, LambdaGrid, ProbeSettings
from styleprobe.explain.traverse import decode_frames
from styleprobe.modelset import list_model_sets, load_model_set
from styleprobe.serving.cpu_repository import build_cpu_repository
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.storage.local import LocalStore
from styleprobe.testing.triton import triton_server

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_BATCH = 4.0
READY_TIMEOUT_S = 1800  # every stub imports torch; on a busy 2-core machine that crawls
METRIC = re.compile(r'^(nv_inference_(?:count|exec_count|request_success))'
                    r'\{model="([^"]+)",version="[^"]*"\} (\S+)$')


def scrape(url: str) -> dict[str, dict[str, float]]:
    """``{model: {metric: value}}`` of Triton's inference counters."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counters: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = METRIC.match(line)
        if match:
            counters.setdefault(match[2], {})[match[1]] = float(match[3])
    return counters


def bench_traversal(local: LocalBackend, remote: TritonBackend, repeats: int) -> dict[str, Any]:
    model_set = local.model_set
    rng = np.random.default_rng(17)
    w = local.mapping(rng.standard_normal((1, model_set.z_dim)).astype(np.float32))[0]
    alpha = rng.standard_normal(model_set.w_dim).astype(np.float32)
    alpha /= np.linalg.norm(alpha)
    lambdas = LambdaGrid().values()
    index = model_set.classifier.class_index(model_set.default_target)
    times = {name: timed(lambda b=backend: decode_frames(b, w, alpha, lambdas, index), repeats)
             for name, backend in (("in_process", local), ("triton", remote))}
    difference = np.abs(decode_frames(remote, w, alpha, lambdas, index).probabilities
                        - decode_frames(local, w, alpha, lambdas, index).probabilities).max()
    median = {name: statistics.median(t) for name, t in times.items()}
    return {"frames": len(lambdas), "repeats": repeats,
            "median_ms": {k: 1000 * v for k, v in median.items()},
            "p90_ms": {k: 1000 * float(np.percentile(t, 90)) for k, t in times.items()},
            "ratio": median["triton"] / median["in_process"],
            "max_probability_difference": float(difference)}


def explain_in_child(backend_kind: str, repository: str, name: str, url: str, store: str,
                     image: np.ndarray, probe_samples: int, job_id: str, barrier: Any,
                     results: Any) -> None:
    """One explanation in a fresh process; started by the barrier, reports its seconds."""
    torch.set_num_threads(1)
    backend = (TritonBackend(load_model_set(Path(repository), name), url)
               if backend_kind == "triton" else LocalBackend(Path(repository), name))
    explainer = Explainer(backend, LocalStore(store))
    spec = JobSpec.create(backend.model_set, probe=ProbeSettings(samples=probe_samples))
    barrier.wait()
    start = time.perf_counter()
    explainer.explain(image, spec, job_id=job_id)
    results.put(time.perf_counter() - start)


def concurrent_explanations(kind: str, repository: Path, name: str, url: str, store: Path,
                            images: np.ndarray, probe_samples: int) -> dict[str, float]:
    """Wall time of ``len(images)`` explanations, one process each, started together."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(images) + 1), context.Queue()
    children = [context.Process(target=explain_in_child, args=(
        kind, str(repository), name, url, str(store), image, probe_samples, f"{kind}-{i}",
        barrier, results)) for i, image in enumerate(images)]
    for child in children:
        child.start()
    barrier.wait(timeout=600)
    start = time.perf_counter()
    seconds = [results.get(timeout=1800) for _ in children]
    wall = time.perf_counter() - start
    for child in children:
        child.join()
        if child.exitcode != 0:
            raise RuntimeError(f"an explanation process exited with {child.exitcode}")
    return {"wall_s": wall, "mean_explanation_s": statistics.mean(seconds)}


def bench_concurrency(local: LocalBackend, remote: TritonBackend, server: TritonProcess,
                      repository: Path, work: Path, explanations: int,
                      probe_samples: int) -> dict[str, Any]:
    model_set = local.model_set
    store = work / "store"
    ensure_direction(remote, LocalStore(store), model_set.default_target,
                     ProbeSettings(samples=probe_samples))  # probed once, then shared
    z = np.random.default_rng(8).standard_normal((explanations, model_set.z_dim))
    images = from_model_layout(local.synthesis(local.mapping(z.astype(np.float32))),
                         model_set.preprocessing)
    before = scrape(server.metrics_url)
    triton = concurrent_explanations("triton", repository, model_set.name, server.grpc_url,
                                     store, images, probe_samples)
    after = scrape(server.metrics_url)
    in_process = concurrent_explanations("local", repository, model_set.name, "", store,
                                         images, probe_samples)
    models = {}
    for model, counters in sorted(after.items()):
        delta = {k: v - before.get(model, {}).get(k, 0.0) for k, v in counters.items()}
        if delta.get("nv_inference_exec_count", 0) > 0:
            models[model] = {
                "inferences": delta["nv_inference_count"],
                "executions": delta["nv_inference_exec_count"],
                "requests": delta["nv_inference_request_success"],
                "batch_size": delta["nv_inference_count"] / delta["nv_inference_exec_count"],
                "requests_per_execution": (delta["nv_inference_request_success"]
                                           / delta["nv_inference_exec_count"]),
            }
    composing = [m for m in models if not m.endswith("-decode")]  # the ensemble runs none
    total_inferences = sum(models[m]["inferences"] for m in composing)
    total_executions = sum(models[m]["executions"] for m in composing)
    return {"explanations": explanations, "probe_samples": probe_samples,
            "triton": triton, "in_process": in_process, "models": models,
            "batch_size": total_inferences / max(total_executions, 1)}


def set_section(r: dict[str, Any]) -> list[str]:
    t, c = r["traversal"], r["concurrency"]
    met = "met" if c["batch_size"] >= TARGET_BATCH else "NOT met"
    lines = [
        f"## {r['model_set']}", "",
        f"Load average when this set started: {', '.join(f'{x:.1f}' for x in r['load'])}.", "",
        f"### {t['frames']}-frame traversal (decode and classify, one batch)", "",
        f"Median of {t['repeats']} runs after {WARMUP} warm-up runs.", "",
        "| backend | median (ms) | p90 (ms) |", "| --- | --- | --- |",
        f"| in process (LocalBackend) | {t['median_ms']['in_process']:.1f} | "
        f"{t['p90_ms']['in_process']:.1f} |",
        f"| Triton (`{r['model_set']}-decode` ensemble over gRPC) | "
        f"{t['median_ms']['triton']:.1f} | {t['p90_ms']['triton']:.1f} |", "",
        f"Ratio Triton / in process: **{t['ratio']:.2f}**; largest difference between their "
        f"target probabilities: {t['max_probability_difference']:.1e}.", "",
        f"### {c['explanations']} concurrent explanations", "",
        f"One process per explanation, started together, sharing a stored direction "
        f"({c['probe_samples']} probe samples, probed once beforehand); each encodes, "
        "traverses 17 frames, searches the flip and renders.", "",
        "| backend | wall time (s) | mean per explanation (s) |", "| --- | --- | --- |",
        f"| Triton | {c['triton']['wall_s']:.1f} | {c['triton']['mean_explanation_s']:.1f} |",
        f"| in process | {c['in_process']['wall_s']:.1f} | "
        f"{c['in_process']['mean_explanation_s']:.1f} |", "",
        "What Triton's dynamic batcher made of it (deltas of its metrics over the Triton run):",
        "", "| model | inferences | executions | requests | batch size (inferences / executions) "
        "| requests per execution |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for model, s in c["models"].items():
        lines.append(f"| {model} | {s['inferences']:.0f} | {s['executions']:.0f} | "
                     f"{s['requests']:.0f} | {s['batch_size']:.1f} | "
                     f"{s['requests_per_execution']:.2f} |")
    return [*lines, "", f"Achieved batch size over the four models: **{c['batch_size']:.1f}** "
            f"(target ≥ {TARGET_BATCH:g}: {met}). The ensemble's own row counts its requests; "
            "its models' executions are in the synthesis and classifier rows.", ""]


def write_report(report: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "triton.json").write_text(json.dumps(report, indent=2) + "\n")
    m = report["machine"]
    lines = [
        "# Triton against in process", "", f"`{report['command']}`", "",
        f"{m['platform']}, {m['cpus']} CPUs; tritonserver {m['tritonserver']} from "
        "nvidia-pytriton serving every set below side by side from one CPU repository "
        "(Python backend running the exported TorchScript, one instance per model, 1 torch "
        "thread each); in process: LocalBackend, 1 torch thread. These are CPU numbers on a "
        "shared machine: production runs `pytorch_libtorch` on GPU.", "",
    ]
    for result in report["sets"]:
        lines += set_section(result)
    (RESULTS / "triton.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", default=Settings.from_env().model_repository)
    parser.add_argument("--model-set", action="append", default=None,
                        help="repeatable; default: every set in the repository")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--explanations", type=int, default=8)
    parser.add_argument("--probe-samples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    repository = Path(args.repository)
    names = args.model_set or list_model_sets(repository)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
               "torch": torch.__version__, "tritonserver": "2.51"}
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as folder:
        work = Path(folder)
        build_cpu_repository(repository, work / "repository", names)
        server = triton_server(work / "repository", work / "tritonserver.log")
        with server.start(timeout_s=READY_TIMEOUT_S):
            for name in names:
                load = os.getloadavg()
                local = LocalBackend(repository, name)
                remote = TritonBackend(local.model_set, server.grpc_url)
                results.append({
                    "model_set": name, "load": load,
                    "traversal": bench_traversal(local, remote, args.repeats),
                    "concurrency": bench_concurrency(local, remote, server, repository,
                                                     work / name, args.explanations,
                                                     args.probe_samples)})
                remote.close()
    sets = " ".join(f"--model-set {name}" for name in names)
    command = (f".venv/bin/python benchmarks/bench_triton.py {sets} --repeats {args.repeats} "
               f"--explanations {args.explanations} --probe-samples {args.probe_samples}")
    write_report({"command": command, "machine": machine, "sets": results})
    print((RESULTS / "triton.md").read_text())


if __name__ == "__main__":
    main()
