"""Benchmark: where one explanation's rendering goes, now and before issue 20, in one run.

Each code version runs in its own process (the older one from ``git archive`` of
``--baseline``): it explains one knee phantom up to its model stages (local store, the
bundled knee-oa set, a small probe), then renders it ``--repeats`` times, the last under
cProfile. Reported per version: the render stage's median wall time and the profile's
cumulative time in each drawing function (what is left is writing the objects to the
store, and bookkeeping).

    .venv/bin/python benchmarks/bench_render.py [--repeats 5] [--baseline 45ddd5b]

Writes benchmarks/results/render-profile.md and render-profile.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BEFORE_ISSUE_20 = "45ddd5b"
DRAWING = ["probability_plot", "animation", "strip", "png", "difference_maps", "report_html",
           "enlarge"]


def measure(repeats: int, folder: str) -> dict[str, Any]:
    """In this process (whichever code is importable): render times and the profile."""
    import cProfile
    import pstats
    import time

    import torch

    from styleprobe.backends.local import LocalBackend
    from styleprobe.data.datasets import phantom_set
    from styleprobe.explain import engine
    from styleprobe.explain.inputs import load_input
    from styleprobe.explain.spec import ProbeSettings
    from styleprobe.storage.local import LocalStore

    torch.set_num_threads(1)
    backend = LocalBackend(REPO / "model_repository", "knee-oa")
    store = LocalStore(Path(folder))
    spec = engine.Explainer(backend, store).spec(probe=ProbeSettings(samples=300))
    image = phantom_set("knee", seed=5, size=64).sample(0).image
    key = engine.store_input(store, "job", load_input(image, backend.model_set.preprocessing))
    context = engine.StageContext("job", spec, store, lambda: backend)
    keys = engine.run_stages(engine.MODEL_STAGES, context, engine.JobKeys(input=key))
    engine.render(store, "job", keys)  # fonts, colour maps, imports: once per process
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        engine.render(store, "job", keys)
        times.append(time.perf_counter() - started)
    profile = cProfile.Profile()
    profile.enable()
    engine.render(store, "job", keys)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    drawing: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        if filename.endswith("explain/render.py") and function in DRAWING:
            drawing[function] = drawing.get(function, 0.0) + cumulative
    total = sum(value for (f, _l, fn), (*_, value, _c) in stats.items()
                if f.endswith("explain/engine.py") and fn == "render")
    return {"median_s": statistics.median(times), "runs_s": times,
            "profiled_s": total, "drawing_s": drawing,
            "objects": len(engine.render(store, "job", keys))}


def run_version(name: str, env: dict[str, str], args: argparse.Namespace,
                work: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", str(args.repeats), str(work / name)]
    answer = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if answer.returncode != 0:
        raise SystemExit(f"{name} failed:\n{answer.stderr[-3000:]}")
    return json.loads(answer.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default=BEFORE_ISSUE_20)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1])))
        return
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        work = Path(tmp)
        old = work / "baseline"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline,
                                  "services"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        shutil.copytree(REPO / "services" / "styleprobe" / "v1",
                        old / "services" / "styleprobe" / "v1", dirs_exist_ok=True)
        env = dict(os.environ)
        results = {"now": run_version("now", env, args, work),
                   "before": run_version("before", {**env, "PYTHONPATH": str(
                       old / "services")}, args, work)}
    write(results, args, load)


def write(results: dict[str, Any], args: argparse.Namespace,
          load: tuple[float, float, float]) -> None:
    record = {"baseline": args.baseline, "repeats": args.repeats, "load_average": load,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", **results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "render-profile.json").write_text(json.dumps(record, indent=2) + "\n")
    before, now = results["before"], results["now"]
    rows = []
    for function in DRAWING:
        b, n = before["drawing_s"].get(function), now["drawing_s"].get(function)
        rows.append(f"| `{function}` | {'-' if b is None else f'{b:.3f}'} "
                    f"| {'-' if n is None else f'{n:.3f}'} |")
    for version in (before, now):
        version["rest_s"] = version["profiled_s"] - sum(version["drawing_s"].values())
    lines = [
        "# Rendering one explanation: where the time goes", "",
        f"`.venv/bin/python benchmarks/bench_render.py --repeats {args.repeats}`", "",
        f"{record['machine']}, load average {load[0]:.1f} at the start (the machine's 2 cores "
        "are shared with six other engineers' runs: compare the two columns, measured in "
        "the same run, not with other files). knee-oa, 17 frames, local store; 'before' is "
        f"the code of commit {args.baseline} (matplotlib plot, one GIF quantization per "
        "frame, PNGs at Pillow's default level, objects written one after another).", "",
        "| | before | now |", "| --- | ---: | ---: |",
        f"| render stage, median of {args.repeats} (s) | {before['median_s']:.3f} "
        f"| **{now['median_s']:.3f}** |",
        f"| objects written | {before['objects']} | {now['objects']} |", "",
        "## The profiled run: cumulative seconds per drawing function", "",
        "(`png` counts every frame and difference PNG; `strip` both strips; in the new code "
        "`enlarge` converts the frames once for all of them. The rest of the stage is "
        "reading the records and writing the objects: "
        f"{before['rest_s']:.3f} s before, {now['rest_s']:.3f} s now, the writes now "
        "concurrent.)", "",
        "| function | before (s) | now (s) |", "| --- | ---: | ---: |", *rows,
        f"| whole stage, profiled | {before['profiled_s']:.3f} | {now['profiled_s']:.3f} |",
    ]
    (RESULTS / "render-profile.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
