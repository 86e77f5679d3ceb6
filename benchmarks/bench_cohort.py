"""Benchmark: cohort throughput (images per second) and peak memory, embedded and through
the service.

Embedded: ``styleprobe cohort run`` at each of ``--sizes``, each its own process; its peak
memory (RSS) must stay flat from the small to the large cohort: the run streams, it never
holds the cohort in memory. Through the service (``--service-sizes``, '' to skip): the
same phantoms uploaded to S3 and submitted with SubmitCohort (prefix) to a ServiceStack
(Redis, S3 on SeaweedFS, a CPU tritonserver, the orchestrator and ``--workers`` Celery
workers), timed from the submit to the job's end (summary written); its throughput is set
against the embedded run of the same size (ratio), the workers' peak memory is read after
each cohort, and Triton's achieved batch size during the cohort is the rise of
``nv_inference_count`` over the rise of ``nv_inference_exec_count`` (Triton's metrics
port), per model.

    .venv/bin/python benchmarks/bench_cohort.py [--sizes 100,1000] [--service-sizes 100,1000]
        [--model-set knee-oa] [--threads 1] [--probe-samples 10000] [--workers 2]

Each embedded size runs on a folder of knee phantoms (PNG), one torch thread, after a
one-image cohort has probed the direction into the same artifact folder (so the timed
runs measure the per-image work, not the one-off probe); the service likewise runs a
one-image cohort first. The model set comes from the model repository; if it is missing
there (or with ``--no-bundled``), an untrained stand-in is exported: ``--stand-in knee``
has the bundled set's architecture (the same compute per image), ``small`` the test
suite's 16x16 one (the report says which was used). Writes benchmarks/results/cohort.md
and cohort.json (``--results NAME``: NAME.md and NAME.json) after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import torch
from bench_triton import scrape  # Triton's inference counters by model

from styleprobe.api import pb, rpc
from styleprobe.config import Settings
from styleprobe.data.datasets import phantom_set, render, write_folder
from styleprobe.modelset import list_model_sets, load_model_set
from styleprobe.serving.cpu_repository import build_cpu_repository
from styleprobe.storage import ArtifactStore, open_store
from styleprobe.testing.stack import ServiceStack
from styleprobe.testing.triton import triton_server

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BEFORE_ISSUE_20 = "45ddd5b"  # the last commit before cohort chunks were batched
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


def baseline_code(work: Path, commit: str) -> dict[str, str]:
    """The package as it was at ``commit`` (git archive into ``work``, with this checkout's
    generated gRPC stubs): the environment that makes ``styleprobe`` run that code."""
    folder = work / f"baseline-{commit}"
    folder.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "services"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    shutil.copytree(REPO / "services" / "styleprobe" / "v1",
                    folder / "services" / "styleprobe" / "v1", dirs_exist_ok=True)
    return {"PYTHONPATH": str(folder / "services")}


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


def upload(store: ArtifactStore, folder: Path, prefix: str) -> str:
    """Put the PNG files of ``folder`` under ``prefix``; the prefix."""
    for path in sorted(folder.glob("*.png")):
        store.put(prefix + path.name, path.read_bytes(), "image/png")
    return prefix


def service_cohort(stub: rpc.StyleProbeStub, token: str, prefix: str, model_set: str,
                   probe_samples: int, render_images: bool = True) -> dict[str, Any]:
    """Submit the objects under ``prefix`` as a cohort and watch it to its end."""
    metadata = (("authorization", f"Bearer {token}"),)
    started = time.perf_counter()
    job = stub.SubmitCohort(pb.SubmitCohortRequest(
        prefix=prefix, model_set=model_set, render_images=render_images,
        options=pb.ExplainOptions(probe=pb.ProbeOptions(samples=probe_samples))),
        metadata=metadata, timeout=120)
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=metadata):
        job = event.job
    seconds = time.perf_counter() - started
    if job.state != pb.JOB_STATE_SUCCEEDED or job.counts.failed:
        raise SystemExit(f"cohort {job.job_id} {pb.JobState.Name(job.state)}: {job.error} "
                         f"({job.counts.failed} images failed)")
    return {"seconds": seconds, "stage_seconds": dict(job.stage_seconds)}


def batch_sizes(before: dict[str, dict[str, float]],
                after: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per model: inferences, executions and their ratio (the achieved batch size)."""
    sizes = {}
    for model, now in sorted(after.items()):
        then = before.get(model, {})
        inferences = now.get("nv_inference_count", 0) - then.get("nv_inference_count", 0)
        executions = (now.get("nv_inference_exec_count", 0)
                      - then.get("nv_inference_exec_count", 0))
        if executions:
            sizes[model] = {"inferences": inferences, "executions": executions,
                            "batch": round(inferences / executions, 2)}
    return sizes


def peak_rss_mib(pid: int) -> float:
    """A live process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_peaks(stack: ServiceStack) -> dict[str, list[float]]:
    """Peak RSS of the workers' Celery parents and of their pool processes (the work)."""
    peaks: dict[str, list[float]] = {"parents": [], "pool": []}
    for worker in stack.workers.values():
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
        peaks["parents"].append(round(peak_rss_mib(worker.pid), 1))
        peaks["pool"] += [round(peak_rss_mib(int(pid)), 1) for pid in children]
    return peaks


def through_service(args: argparse.Namespace, repository: Path, work: Path,
                    folders: dict[int, Path], warm: Path) -> dict[str, Any]:
    """Each size of ``folders`` as a cohort through the service, on one stack."""
    build_cpu_repository(repository, work / "triton-repository", [args.model_set])
    runs = []
    with triton_server(work / "triton-repository", work / "tritonserver.log") as triton, \
            ServiceStack(work / "stack", repository, workers=args.workers, backend="triton",
                         triton_url=triton.grpc_url,
                         extra_env={"STYLEPROBE_PROBE_SAMPLES": str(args.probe_samples)}
                         ) as stack, \
            grpc.insecure_channel(stack.grpc_address) as channel:
        stub = rpc.StyleProbeStub(channel)
        store = open_store(stack.settings())
        probe = service_cohort(stub, stack.token, upload(store, warm, "bench/warm/"),
                               args.model_set, args.probe_samples)
        for size, folder in folders.items():
            for render_images in (True, False) if args.rows_only else (True,):
                prefix = upload(store, folder, f"bench/cohort-{size}-{render_images}/")
                before = scrape(triton.metrics_url)
                result = service_cohort(stub, stack.token, prefix, args.model_set,
                                        args.probe_samples, render_images)
                batches = batch_sizes(before, scrape(triton.metrics_url))
                peaks = worker_peaks(stack)
                runs.append({"images": size, "pictures": render_images,
                             "seconds": round(result["seconds"], 1),
                             "images_per_s": round(size / result["seconds"], 3),
                             "stage_seconds": result["stage_seconds"],
                             "worker_peak_rss_mib": peaks, "triton_batch": batches,
                             "load_average": round(os.getloadavg()[1], 1)})
                print(runs[-1], flush=True)
    return {"workers": args.workers, "probe_run_seconds": round(probe["seconds"], 1),
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--service-sizes", default="100,1000",
                        help="cohort sizes through the service ('' to skip)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers of the service")
    parser.add_argument("--results", default="cohort",
                        help="name of the result files in benchmarks/results/ (default cohort)")
    parser.add_argument("--model-set", default="knee-oa")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--probe-samples", type=int, default=10_000)
    parser.add_argument("--stand-in", choices=sorted(STAND_INS), default="knee",
                        help="architecture of the untrained stand-in used when the model set "
                             "is missing, or with --no-bundled (default knee)")
    parser.add_argument("--no-bundled", action="store_true",
                        help="use the stand-in even if the model set is in the repository")
    parser.add_argument("--baseline", default=BEFORE_ISSUE_20,
                        help="also run the embedded cohorts with the code of this commit, in "
                             f"the same run ('' to skip; default {BEFORE_ISSUE_20}, before "
                             "chunks were batched)")
    parser.add_argument("--rows-only", action="store_true",
                        help="also run each service cohort without pictures "
                             "(render_images false)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    service_sizes = [int(s) for s in args.service_sizes.split(",") if s]

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
        folders = {}
        for size in sorted({*sizes, *service_sizes}):
            folders[size] = work / f"images-{size}"
            write_folder(render(phantoms, size, start=1), folders[size])
        record: dict[str, Any] = {"embedded": [], "baseline": [], "service": None}
        probe = run_cohort(warm, out, args.model_set, env, args.threads)
        runs = [("embedded", env)]
        if args.baseline:
            runs.append(("baseline", {**env, **baseline_code(work, args.baseline)}))
        for size in sizes:
            for name, run_env in runs:  # each its own artifacts, the probed direction copied
                artifacts = work / f"out-{name}-{size}"
                shutil.copytree(out / "directions", artifacts / "directions")
                result = run_cohort(folders[size], artifacts, args.model_set, run_env,
                                    args.threads)
                record[name].append({
                    "images": size, "seconds": round(result["seconds"], 1),
                    "images_per_s": round(size / result["seconds"], 3),
                    "peak_rss_mib": round(result["peak_rss_mib"], 1),
                    "load_average": round(os.getloadavg()[1], 1)})
                print(name, record[name][-1], flush=True)
                write_results(args, trained, resolution, probe["seconds"], record)
        if service_sizes:
            record["service"] = through_service(
                args, repository, work, {size: folders[size] for size in service_sizes}, warm)
            write_results(args, trained, resolution, probe["seconds"], record)
    print((RESULTS / f"{args.results}.md").read_text())


def write_results(args: argparse.Namespace, trained: bool, resolution: int,
                  probe_seconds: float, record: dict[str, Any]) -> None:
    """Write cohort.md and cohort.json from the runs so far."""
    rows, service, baseline = record["embedded"], record["service"], record["baseline"]
    summary = {
        "model_set": args.model_set,
        "models": ("trained (bundled)" if trained else
                   f"untrained '{args.stand_in}' stand-in: {STAND_INS[args.stand_in]}"),
        "threads": args.threads, "probe_samples": args.probe_samples,
        "probe_run_seconds": round(probe_seconds, 1), "runs": rows, "service": service,
        "baseline": {"commit": args.baseline, "runs": baseline},
        "load_average_1_5_15": os.getloadavg(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}, torch {torch.__version__}",
    }
    if rows:
        summary["peak_rss_ratio_largest_to_smallest"] = round(
            rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(summary, indent=2) + "\n")
    command = (f".venv/bin/python benchmarks/bench_cohort.py --sizes {args.sizes} "
               f"--service-sizes '{args.service_sizes}' --workers {args.workers} "
               f"--model-set {args.model_set} --threads {args.threads} "
               f"--probe-samples {args.probe_samples}"
               + ("" if trained else f" --stand-in {args.stand_in}")
               + (" --no-bundled" if args.no_bundled else "")
               + ("" if args.results == "cohort" else f" --results {args.results}")
               + ("" if args.baseline == BEFORE_ISSUE_20 else f" --baseline '{args.baseline}'")
               + (" --rows-only" if args.rows_only else ""))
    lines = [
        "# Cohorts: throughput and peak memory, embedded and through the service",
        "",
        f"Knee phantoms (PNG, {resolution}x{resolution}), model set `{args.model_set}` "
        f"({summary['models']}), default λ grid (17 frames), full per-image outputs (frames, "
        "GIF, strip, report, manifest) and the cohort summary (CSV, Parquet, HTML). "
        f"Machine: {summary['machine']}. Command: `{command}`.",
        "",
        "## Embedded: `styleprobe cohort run`",
        "",
        f"{args.threads} torch thread(s). Each size is its own process; the direction was "
        "probed beforehand by a one-image cohort in the same artifact folder "
        f"({probe_seconds:.1f} s with {args.probe_samples} probe samples), so these runs load "
        "it from the store. Wall time includes process start and model loading. Peak RSS is "
        "the child's `ru_maxrss` (wait4). Load average: the machine's 5-minute load when the "
        "run ended (throughput is only comparable at similar load).",
        "",
        "| images | wall time (s) | images/s | peak RSS (MiB) | load average |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *[f"| {r['images']} | {r['seconds']} | {r['images_per_s']} | {r['peak_rss_mib']} "
          f"| {r['load_average']} |" for r in rows],
    ]
    if baseline:
        lines += ["", f"The same, with the code of commit {args.baseline} (before issue 20: "
                      "image by image, matplotlib rendering), in this run:", "",
                  "| images | wall time (s) | images/s | peak RSS (MiB) | load average |",
                  "| ---: | ---: | ---: | ---: | ---: |",
                  *[f"| {r['images']} | {r['seconds']} | {r['images_per_s']} "
                    f"| {r['peak_rss_mib']} | {r['load_average']} |" for r in baseline]]
    if len(rows) > 1:
        lines += ["", f"Peak RSS at {rows[-1]['images']} images / at {rows[0]['images']} "
                      f"images: {summary['peak_rss_ratio_largest_to_smallest']:.3f} (flat "
                      "means the cohort is streamed, not held in memory)."]
    if service:
        lines += _service_lines(service, {r["images"]: r for r in rows},
                                {r["images"]: r for r in baseline})
    (RESULTS / f"{args.results}.md").write_text("\n".join(lines) + "\n")


def _service_lines(service: dict[str, Any], embedded: dict[int, dict[str, Any]],
                   baseline: dict[int, dict[str, Any]]) -> list[str]:
    lines = [
        "", "## Through the service: SubmitCohort", "",
        f"Orchestrator, {service['workers']} Celery workers (one process each, both queues), "
        "Redis, S3 (SeaweedFS), tritonserver 2.51 on a CPU repository (Python backend over "
        "the exported TorchScript), all on this machine. Wall time from the SubmitCohort "
        "call until WatchJob reports the job SUCCEEDED (the summary written); the servers "
        "were started beforehand and a one-image cohort probed the direction "
        f"({service['probe_run_seconds']} s). Ratio: service images/s over the embedded "
        "run's of the same size. Worker peak RSS: VmHWM of each worker's pool process (where "
        "the images are explained) after the cohort, cumulative over the cohorts run so "
        "far on the same workers (cohort.json has the Celery parents' too).",
        "",
        "Ratio to the baseline: service images/s over the embedded run of the code before "
        "issue 20 (same run, same size).",
        "",
        "| images | pictures | wall time (s) | images/s | service / embedded | service / "
        "baseline embedded | worker peak RSS (MiB) | load average |",
        "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for run in service["runs"]:
        ratios = []
        for reference in (embedded.get(run["images"]), baseline.get(run["images"])):
            ratios.append(f"**{run['images_per_s'] / reference['images_per_s']:.2f}**"
                          if reference else "-")
        lines.append(f"| {run['images']} | {'yes' if run.get('pictures', True) else 'no'} "
                     f"| {run['seconds']} | {run['images_per_s']} | {ratios[0]} | {ratios[1]} "
                     f"| {', '.join(map(str, run['worker_peak_rss_mib']['pool']))} "
                     f"| {run['load_average']} |")
    lines += ["", "### Triton's achieved batch size during each cohort", "",
              "Inferences over executions (`nv_inference_count` / `nv_inference_exec_count`, "
              "their rise during the cohort), per model; `-decode` is the ensemble (synthesis, "
              "then classifier) that decodes and classifies the traversal frames.", "",
              "A chunk's images go to each model together (even chunks of at least 16: "
              "100 images are six chunks of 16-17); batches above Triton's max_batch_size "
              "(32) are cut and sent concurrently.", "",
              "| images | model | inferences | executions | batch size |",
              "| ---: | --- | ---: | ---: | ---: |"]
    for run in service["runs"]:
        lines += [f"| {run['images']} | {model} | {b['inferences']:.0f} | {b['executions']:.0f} "
                  f"| {b['batch']} |" for model, b in run["triton_batch"].items()
                  if run.get("pictures", True)]
    return lines


if __name__ == "__main__":
    main()
