"""Benchmark: the DICOM gateway's own work per instance, against a real Orthanc (issue 16).

What the gateway adds to an explanation, per instance, as the median of ``--repeat``:
the de-identified copy sent to the engine (CT_small), the result objects built with
highdicom (a 17-frame traversal and difference maps of ``--size`` pixels, and the SR),
and sending them to Orthanc by C-STORE and by STOW-RS (each its own job id, so new
instances). The explanation itself is the service's (benchmarks/bench_service.py).

    .venv/bin/python benchmarks/bench_gateway.py [--repeat 20] [--size 128]

Results: benchmarks/results/gateway.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file

from styleprobe.api import pb
from styleprobe.gateway.deidentify import engine_copy
from styleprobe.gateway.results import build_results
from styleprobe.gateway.send import Destination, c_store, stow
from styleprobe.testing.orthanc import orthanc_server

RESULTS = Path(__file__).resolve().parent / "results"
LAMBDAS = 17


def job(job_id: str) -> pb.Job:
    return pb.Job(job_id=job_id, model_set="knee-oa", target="OA", explanation=pb.Explanation(
        lambdas=list(np.linspace(-4, 4, LAMBDAS)), prediction_input=0.3,
        prediction_reconstruction=0.35, flip=pb.Flip(found=True, at_lambda=1.5),
        direction=pb.DirectionSummary(auc=0.95),
        quality=pb.ReconstructionQuality(pixel_mse=0.01),
        models={"classifier": "knee-oa-classifier/1", "encoder": "knee-oa-encoder/1"}))


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (args.size, args.size), dtype=np.uint8)
              for _ in range(LAMBDAS)]
    maps = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
            for _ in range(LAMBDAS)]
    process, orthanc = orthanc_server(workdir)
    process.start(timeout_s=60)
    times: dict[str, list[float]] = {"deidentify": [], "build": [], "c_store": [],
                                     "stow_rs": []}
    try:
        destination = Destination(orthanc.ae_title, "127.0.0.1", orthanc.dicom_port)
        for index in range(args.repeat):
            start = time.perf_counter()
            engine_copy(source)
            times["deidentify"].append(time.perf_counter() - start)
            start = time.perf_counter()
            objects = build_results(source, job(f"dimse-{index}"), frames, maps)
            times["build"].append(time.perf_counter() - start)
            start = time.perf_counter()
            c_store(objects, destination, "STYLEPROBE")
            times["c_store"].append(time.perf_counter() - start)
            objects = build_results(source, job(f"web-{index}"), frames, maps)
            start = time.perf_counter()
            stow(objects, orthanc.dicomweb_url)
            times["stow_rs"].append(time.perf_counter() - start)
    finally:
        process.stop()
    size = sum(len(ds.PixelData) for ds in objects if "PixelData" in ds)
    return {"repeat": args.repeat, "frames": LAMBDAS, "size": args.size,
            "pixel_bytes": size,
            **{f"{name}_ms": round(statistics.median(values) * 1000, 2)
               for name, values in times.items()},
            "machine": f"{platform.machine()}, Python {platform.python_version()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args, Path(folder))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# DICOM gateway: its own work per instance", "",
             f"CT_small, {LAMBDAS} frames of {args.size}x{args.size} (traversal grey, "
             f"differences RGB: {result['pixel_bytes']:,} bytes of pixels), a real Orthanc on "
             f"loopback; median of {args.repeat}. `.venv/bin/python benchmarks/bench_gateway.py "
             f"--repeat {args.repeat} --size {args.size}`; {result['machine']}.", "",
             "| step | ms |", "| --- | --- |",
             f"| de-identified copy for the engine | {result['deidentify_ms']} |",
             f"| results built (2 SC + 1 SR, highdicom) | {result['build_ms']} |",
             f"| sent by C-STORE (one association) | {result['c_store_ms']} |",
             f"| sent by STOW-RS | {result['stow_rs_ms']} |"]
    (RESULTS / "gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
