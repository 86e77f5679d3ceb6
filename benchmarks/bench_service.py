"""Benchmark: one explanation end to end through the service against the same work in process.

Through the service: a gRPC client submits a phantom PNG (knee or histology, as the model
set expects) to the orchestrator and watches the job until it has succeeded (Redis, S3 on
SeaweedFS, a CPU tritonserver and two Celery workers, all started here on free ports). In
process: the embedded mode, :class:`~styleprobe.explain.engine.Explainer` with the models
loaded locally and a local artifact folder. Both run cold (the job probes its direction)
and warm (the direction is stored; the median of ``--repeats`` runs). Reported: wall
times, their ratio, and where the time goes by stage (the workers' own stage timings; the
rest is queueing, transport and bookkeeping).

    .venv/bin/python benchmarks/bench_service.py [--repository model_repository]
        [--model-set knee-oa] [--repeats 5] [--probe-samples 2000]

Writes benchmarks/results/service.md and service.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from PIL import Image

from styleprobe.api import pb, rpc
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.data.datasets import phantom_set
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import JobSpec, LambdaGrid, ProbeSettings
from styleprobe.modelset import load_model_set
from styleprobe.serving.cpu_repository import build_cpu_repository
from styleprobe.storage.local import LocalStore
from styleprobe.testing.stack import ServiceStack
from styleprobe.testing.triton import triton_server

RESULTS = Path(__file__).resolve().parent / "results"
STAGES = ("encode", "direction", "traverse", "render", "manifest")


def phantom_png(kind: str, size: int, index: int) -> bytes:
    """A phantom of ``kind`` (knee: grayscale, histology: RGB) as PNG bytes."""
    image = np.round(phantom_set(kind, seed=11, size=size).sample(index).image * 255)
    buffer = io.BytesIO()
    Image.fromarray(np.squeeze(image.astype(np.uint8), axis=-1) if image.shape[-1] == 1
                    else image.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def through_service(stub: rpc.StyleProbeStub, token: str, request: pb.ExplainRequest
                    ) -> dict[str, Any]:
    """Submit, watch to the end; wall seconds and the workers' seconds by stage."""
    metadata = (("authorization", f"Bearer {token}"),)
    start = time.perf_counter()
    job = stub.Explain(request, metadata=metadata, timeout=60)
    submitted = time.perf_counter() - start
    for event in stub.WatchJob(pb.WatchJobRequest(job_id=job.job_id), metadata=metadata,
                               timeout=1800):
        job = event.job
    wall = time.perf_counter() - start
    if job.state != pb.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job {job.job_id} {pb.JobState.Name(job.state)}: {job.error}")
    stages = {name: job.stage_seconds[name] for name in STAGES}
    return {"wall_s": wall, "submit_s": submitted, "stages_s": stages,
            "other_s": wall - submitted - sum(stages.values()),
            "created": job.created_at.ToDatetime().timestamp(),
            "started": job.started_at.ToDatetime().timestamp(),
            "finished": job.finished_at.ToDatetime().timestamp()}


def burst_through_service(stub: rpc.StyleProbeStub, token: str,
                          requests: list[pb.ExplainRequest]) -> dict[str, Any]:
    """All ``requests`` submitted at once (one thread each, watching its job to the end):
    each job's latency, in the order submitted, and the burst's total time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(requests)) as pool:
        runs = list(pool.map(lambda r: {**through_service(stub, token, r),
                                        "ended": time.perf_counter()}, requests))
    total = max(run["ended"] for run in runs) - started
    latencies = [run["wall_s"] for run in runs]
    median = statistics.median(latencies)
    first_created = min(run["created"] for run in runs)
    return {"jobs": len(runs), "total_s": round(total, 2), "median_s": round(median, 2),
            "first_s": round(min(latencies), 2), "last_s": round(max(latencies), 2),
            "median_over_total": round(median / total, 3),
            "latencies_s": [round(x, 2) for x in latencies],
            "submit_s": [round(run["submit_s"], 2) for run in runs],
            # from the first job's creation (server clock): when each job was created,
            # started (its first stage) and finished
            "created_s": [round(run["created"] - first_created, 2) for run in runs],
            "started_s": [round(run["started"] - first_created, 2) for run in runs],
            "finished_s": [round(run["finished"] - first_created, 2) for run in runs],
            "worker_s": [round(sum(run["stages_s"].values()), 2) for run in runs]}


def in_process(explainer: Explainer, marks: list[tuple[str, float]], data: bytes,
               spec: JobSpec) -> dict[str, Any]:
    """The embedded pipeline; wall seconds and seconds by stage (from its progress calls)."""
    marks.clear()
    start = time.perf_counter()
    explainer.explain(data, spec, filename="phantom.png")
    wall = time.perf_counter() - start
    first: dict[str, float] = {}
    for stage, moment in marks:
        first.setdefault(stage, moment)
    bounds = sorted((moment, stage) for stage, moment in first.items())
    ends = [moment for moment, _ in bounds[1:]] + [start + wall]
    stages = {stage: end - moment for (moment, stage), end in zip(bounds, ends, strict=True)}
    stages["input"] = stages.get("input", 0.0) + bounds[0][0] - start  # decoding comes first
    return {"wall_s": wall, "stages_s": stages}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    repository = Path(args.repository)
    model_set = load_model_set(repository, args.model_set)
    size = model_set.preprocessing.resolution
    kind = "knee" if model_set.preprocessing.channels == 1 else "histology"
    probe = ProbeSettings(samples=args.probe_samples, seed=1)
    spec = JobSpec.create(model_set, lambdas=args.lambdas, probe=probe)
    marks: list[tuple[str, float]] = []
    explainer = Explainer(LocalBackend(repository, args.model_set), LocalStore(work / "local"),
                          progress=lambda stage, _f: marks.append((stage, time.perf_counter())))
    local_cold = in_process(explainer, marks, phantom_png(kind, size, 0), spec)
    local_warm = [in_process(explainer, marks, phantom_png(kind, size, i + 1), spec)
                  for i in range(args.repeats)]

    build_cpu_repository(repository, work / "triton-repository", [args.model_set])
    with triton_server(work / "triton-repository", work / "tritonserver.log") as server, \
            ServiceStack(work / "stack", repository, workers=2, backend="triton",
                         triton_url=server.grpc_url) as stack, \
            grpc.insecure_channel(stack.grpc_address) as channel:
        stub = rpc.StyleProbeStub(channel)

        def request(index: int) -> pb.ExplainRequest:
            return pb.ExplainRequest(
                image_bytes=phantom_png(kind, size, index), filename="phantom.png",
                model_set=args.model_set, lambdas=args.lambdas,
                options=pb.ExplainOptions(probe=pb.ProbeOptions(samples=probe.samples,
                                                                seed=probe.seed)))

        service_cold = through_service(stub, stack.token, request(0))
        service_warm = [through_service(stub, stack.token, request(i + 1))
                        for i in range(args.repeats)]
        burst = (burst_through_service(stub, stack.token, [
            request(100 + i) for i in range(args.burst)]) if args.burst else None)
    return {"burst": burst, "cold": {"service": service_cold, "in_process": local_cold},
            "warm": {"service": _median_run(service_warm), "in_process": _median_run(local_warm),
                     "service_runs_s": [r["wall_s"] for r in service_warm],
                     "in_process_runs_s": [r["wall_s"] for r in local_warm]}}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    return ordered[(len(ordered) - 1) // 2]


def _stage_rows(service: dict[str, Any], local: dict[str, Any]) -> list[str]:
    rows = [f"| {stage} | {service['stages_s'][stage]:.2f} | "
            f"{local['stages_s'].get(stage, 0.0):.2f} |" for stage in STAGES]
    rows.append("| decode the input, store it, queue the job (orchestrator; in process: "
                f"decoding, storing) | {service['submit_s']:.2f} | "
                f"{local['stages_s'].get('input', 0.0):.2f} |")
    rows.append(f"| queue waits, hand-offs between workers, watch polling | "
                f"{service['other_s']:.2f} | - |")
    rows.append(f"| **total (wall)** | **{service['wall_s']:.2f}** | **{local['wall_s']:.2f}** |")
    return rows


def _burst_lines(burst: dict[str, Any] | None) -> list[str]:
    if not burst:
        return []
    return [
        f"## A burst of {burst['jobs']} Explain calls on two workers", "",
        "Submitted at once, each watched to its end. A job's later stages are served before "
        "new jobs' first ones (Redis priorities per stage, services/styleprobe/worker/app.py), "
        "so jobs finish roughly in the order they came. Before (issue 20): median 11.6 s of "
        "13.5 s total (0.86), first job 2.0 s.", "",
        "| jobs | total (s) | median job latency (s) | median / total | first (s) | last (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {burst['jobs']} | {burst['total_s']} | {burst['median_s']} "
        f"| **{burst['median_over_total']}** | {burst['first_s']} | {burst['last_s']} |", "",
        "Latency of each job in the order submitted (s): "
        + ", ".join(f"{x:g}" for x in burst["latencies_s"]), "",
        "Each job's Explain call (submission) took (s): "
        + ", ".join(f"{x:g}" for x in burst["submit_s"]), "",
        "Each job's end, from the first job's creation (s): "
        + ", ".join(f"{x:g}" for x in burst["finished_s"]), "",
        "Workers' time per job, all stages (s): "
        + ", ".join(f"{x:g}" for x in burst["worker_s"]), ""]


def write_report(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(result, indent=2) + "\n")
    m, cold, warm = result["machine"], result["runs"]["cold"], result["runs"]["warm"]
    ratio_cold = cold["service"]["wall_s"] / cold["in_process"]["wall_s"]
    ratio_warm = warm["service"]["wall_s"] / warm["in_process"]["wall_s"]
    lines = [
        f"# One explanation through the service against in process: model set "
        f"{result['model_set']}", "",
        f"`{result['command']}`", "",
        f"{m['platform']}, {m['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average'])}. Service: orchestrator, two "
        "Celery workers (one process each, both queues), Redis, S3 (SeaweedFS), tritonserver "
        "2.51 CPU repository (Python backend over the exported TorchScript). In process: "
        "LocalBackend and a local artifact folder, 1 torch thread. λ grid "
        f"{result['lambdas']}, {result['probe_samples']} probe samples. CPU numbers; "
        "production runs Triton on GPU.", "",
        "| run | service (s) | in process (s) | service / in process |",
        "| --- | --- | --- | --- |",
        f"| cold: the job probes its direction | {cold['service']['wall_s']:.2f} | "
        f"{cold['in_process']['wall_s']:.2f} | **{ratio_cold:.2f}** |",
        f"| warm: direction stored (median of {result['repeats']}) | "
        f"{warm['service']['wall_s']:.2f} | {warm['in_process']['wall_s']:.2f} | "
        f"**{ratio_warm:.2f}** |", "",
        "Before issue 20 (benchmarks/results/service.md of commit 45ddd5b, load average 6.6 "
        "at its start): warm through the service 2.32 s, of which rendering 1.27 s; now "
        f"{warm['service']['wall_s']:.2f} s (**{warm['service']['wall_s'] / 2.32:.2f}×**), "
        f"rendering {warm['service']['stages_s'].get('render', 0.0):.2f} s.", "",
        *_burst_lines(result["runs"].get("burst")),
        "## Where the time goes, warm (the median run)", "",
        "Service stages are the workers' own timings (Job.stage_seconds); each stage of the "
        "service also reads its inputs from and writes its outputs to S3.", "",
        "| stage | service (s) | in process (s) |", "| --- | --- | --- |",
        *_stage_rows(warm["service"], warm["in_process"]), "",
        "## Where the time goes, cold", "",
        "| stage | service (s) | in process (s) |", "| --- | --- | --- |",
        *_stage_rows(cold["service"], cold["in_process"]),
    ]
    (RESULTS / "service.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", default=Settings.from_env().model_repository)
    parser.add_argument("--model-set", default="knee-oa")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--probe-samples", type=int, default=2000)
    parser.add_argument("--lambdas", default=str(LambdaGrid()))
    parser.add_argument("--burst", type=int, default=30,
                        help="Explain calls submitted at once after the warm runs (0: none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="bench-service-") as folder:
        runs = run(args, Path(folder))
    command = (f"benchmarks/bench_service.py --model-set {args.model_set} --repeats "
               f"{args.repeats} --probe-samples {args.probe_samples} --lambdas={args.lambdas} "
               f"--burst {args.burst}")
    write_report({"model_set": args.model_set, "command": f".venv/bin/python {command}",
                  "machine": machine, "lambdas": args.lambdas, "repeats": args.repeats,
                  "probe_samples": args.probe_samples, "runs": runs})
    print((RESULTS / "service.md").read_text())


if __name__ == "__main__":
    main()
