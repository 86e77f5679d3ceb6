"""Benchmark: embedded cohort throughput (images per second) and peak memory (RSS) of the
``styleprobe cohort run`` process at two cohort sizes. Peak memory must stay flat from the
small to the large cohort: the run streams, it never holds the cohort in memory.

    .venv/bin/python benchmarks/bench_cohort.py [--sizes 100,1000] [--model-set knee-oa]
                                                [--threads 1] [--probe-samples 10000]

Each size runs as its own process on a folder of knee phantoms (PNG), one torch thread,
after a one-image cohort has probed the direction into the same artifact folder (so the
timed runs measure the per-image work, not the one-off probe). The model set comes from
the model repository; if it is missing there (or with ``--no-bundled``), an untrained
stand-in is exported: ``--stand-in knee`` has the bundled set's architecture (the same
compute per image), ``small`` the test suite's 16x16 one (the report says which was used).
Writes benchmarks/results/cohort.md and cohort.json (after each size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from styleprobe.config import Settings
from styleprobe.data.datasets import phantom_set, render, write_folder
from styleprobe.modelset import list_model_sets, load_model_set

RESULTS = Path(__file__).resolve().parent / "results"
STYLEPROBE = Path(sys.executable).with_name("styleprobe")


# Untrained stand-ins: "knee" has the bundled knee-oa's architecture (64x64, w 128);
# "small" is the test suite's 16x16 set, for quick memory checks on a busy machine.
STAND_INS = {
    "knee": {"resolution": 64, "w_dim": 128, "mapping_layers": 8, "channel_base": 1024,
             "channel_max": 128, "encoder_width": 32, "classifier_width": 16},
    "small": {"resolution": 16, "w_dim": 32, "mapping_layers": 2, "channel_base": 256,
              "channel_max": 32, "encoder_width": 8, "classifier_width": 8},
}


def stand_in_repository(folder: Path, name: str, kind: str) -> Path:
    """An untrained grayscale model set of the ``kind`` architecture (:data:`STAND_INS`)."""
    from styleprobe.models.classifier import Classifier
    from styleprobe.models.encoder import Encoder
    from styleprobe.models.stylegan2 import Generator, GeneratorConfig, seeded_z
    from styleprobe.training.export import export_model_set

    arch = STAND_INS[kind]
    res, w_dim = arch["resolution"], arch["w_dim"]
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=res, channels=1, z_dim=w_dim, w_dim=w_dim,
                          mapping_layers=arch["mapping_layers"],
                          channel_base=arch["channel_base"], channel_max=arch["channel_max"])
    G = Generator(cfg).eval()
    classifier = Classifier(res, 1, 2, arch["classifier_width"]).eval()
    with torch.no_grad():  # move the threshold to the median: half the samples are "OA"
        images = G(seeded_z(256, cfg.z_dim, seed=1), noise_mode="const").clamp(-1, 1)
        logits = classifier(images)
        classifier.head[-1].bias[1] -= float((logits[:, 1] - logits[:, 0]).median())
    export_model_set(
        name=name, G=G,
        encoder=Encoder(res, 1, w_dim, arch["encoder_width"], G.mapping.w_avg).eval(),
        classifier=classifier, class_names=["no-OA", "OA"],
        default_target="OA", repository=folder, max_pixel_mse=0.05,
        description=f"untrained {kind} stand-in (benchmark only)")
    return folder


def run_cohort(images: Path, out: Path, model_set: str, env: dict[str, str],
               threads: int) -> dict[str, float]:
    """Run one cohort as a child process; its wall time and peak RSS (from wait4)."""
    command = [str(STYLEPROBE), "--threads", str(threads), "cohort", "run", str(images),
               "--model-set", model_set, "--out", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    output = child.stdout.read().decode() + child.stderr.read().decode()
    if child.returncode != 0:
        raise SystemExit(f"cohort run failed ({child.returncode}):\n{output}")
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "output": output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--model-set", default="knee-oa")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-samples", type=int, default=10_000)
    parser.add_argument("--stand-in", choices=sorted(STAND_INS), default="knee",
                        help="architecture of the untrained stand-in used when the model set "
                             "is missing, or with --no-bundled (default knee)")
    parser.add_argument("--no-bundled", action="store_true",
                        help="use the stand-in even if the model set is in the repository")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        work = Path(tmp)
        repository = Path(Settings.from_env().model_repository)
        trained = not args.no_bundled and args.model_set in list_model_sets(repository)
        if not trained:
            repository = stand_in_repository(work / "model_repository", args.model_set,
                                             args.stand_in)
        resolution = load_model_set(repository, args.model_set).preprocessing.resolution
        env = {**os.environ, "STYLEPROBE_MODEL_REPOSITORY": str(repository),
               "STYLEPROBE_PROBE_SAMPLES": str(args.probe_samples)}
        out = work / "artifacts"
        phantoms = phantom_set("knee", seed=31_337, size=resolution)
        warm = work / "images-warm"
        write_folder(render(phantoms, 1), warm)
        probe = run_cohort(warm, out, args.model_set, env, args.threads)
        rows: list[dict[str, float]] = []
        for size in sizes:
            images = work / f"images-{size}"
            write_folder(render(phantoms, size, start=1), images)
            result = run_cohort(images, out, args.model_set, env, args.threads)
            rows.append({"images": size, "seconds": round(result["seconds"], 1),
                         "images_per_s": round(size / result["seconds"], 3),
                         "peak_rss_mib": round(result["peak_rss_mib"], 1),
                         "load_average": round(os.getloadavg()[1], 1)})
            print(rows[-1], flush=True)
            write_results(args, trained, resolution, probe["seconds"], rows)
    print((RESULTS / "cohort.md").read_text())


def write_results(args: argparse.Namespace, trained: bool, resolution: int,
                  probe_seconds: float, rows: list[dict[str, float]]) -> None:
    """Write cohort.md and cohort.json from the sizes run so far."""
    flat = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    record = {
        "model_set": args.model_set,
        "models": ("trained (bundled)" if trained else
                   f"untrained '{args.stand_in}' stand-in: {STAND_INS[args.stand_in]}"),
        "threads": args.threads, "probe_samples": args.probe_samples,
        "probe_run_seconds": round(probe_seconds, 1), "runs": rows,
        "peak_rss_ratio_largest_to_smallest": round(flat, 3),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, torch {torch.__version__}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cohort.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Embedded cohort: throughput and peak memory",
        "",
        f"`styleprobe cohort run` on knee phantoms (PNG, {resolution}x{resolution}), model set "
        f"`{args.model_set}` ({record['models']}), {args.threads} torch thread(s), default λ "
        "grid (17 frames), full per-image outputs (frames, GIF, strip, report, manifest). "
        "Each size is its own process; the direction was probed beforehand by a one-image "
        f"cohort in the same artifact folder ({probe_seconds:.1f} s with "
        f"{args.probe_samples} probe samples), so these runs load it from the store. Wall "
        "time includes process start and model loading. Peak RSS is the child's "
        "`ru_maxrss` (wait4). Load average: the machine's 5-minute load when the run ended "
        "(throughput is only comparable at similar load).",
        "",
        "| images | wall time (s) | images/s | peak RSS (MiB) | load average |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['images']} | {r['seconds']} | {r['images_per_s']} | {r['peak_rss_mib']} "
          f"| {r['load_average']} |" for r in rows],
        "",
        f"Peak RSS at {rows[-1]['images']} images / at {rows[0]['images']} images: "
        f"{flat:.3f} (flat means the cohort is streamed, not held in memory).",
        "",
        f"Machine: {record['machine']}. Command: `.venv/bin/python benchmarks/bench_cohort.py "
        f"--sizes {args.sizes} --model-set {args.model_set} --threads {args.threads} "
        f"--probe-samples {args.probe_samples}"
        + ("" if trained else f" --stand-in {args.stand_in}")
        + (" --no-bundled" if args.no_bundled else "") + "`.",
        "",
        "The service's cohort throughput (ratio to this) and Triton's achieved batch size "
        "come with the service path (SubmitCohort).",
    ]
    (RESULTS / "cohort.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
