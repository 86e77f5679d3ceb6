"""``styleprobe evaluate``: measure model sets on held-out phantoms and write their reports.

``styleprobe evaluate --model-set knee-oa [--model-set histology-tumour] [--n 200]
[--out DIR] [--results-table docs/results.md]`` writes ``DIR/<set>/report.{md,html,json}``
with ``figures/``, and optionally the combined table of StyleProbe's numbers against the
paper's.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.common import UserError, add_repository_arg, settings_from_args
from styleprobe.config import Settings
from styleprobe.explain.spec import LambdaGrid

if TYPE_CHECKING:
    from styleprobe.evaluation.evaluate import Evaluation, EvaluationSettings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate model sets on held-out phantoms "
                                        "(the paper's table, oracle, Grad-CAM, bias)")
    p.add_argument("--model-set", action="append", required=True, dest="model_sets",
                   help="model set to evaluate (repeat for several)")
    p.add_argument("--n", type=int, default=200, help="held-out phantoms to traverse")
    p.add_argument("--out", default=None,
                   help="report folder (default: STYLEPROBE_STORE_DIR/evaluation); one "
                        "sub-folder per model set")
    p.add_argument("--phantoms", default=None, choices=["knee", "histology"],
                   help="phantom set of the test images (default: the set's training data)")
    p.add_argument("--lambdas", default=str(LambdaGrid()), help="λ grid start:stop:steps")
    p.add_argument("--probe-samples", type=int, default=None,
                   help="latents sampled to probe each direction (default: "
                        "STYLEPROBE_PROBE_SAMPLES)")
    p.add_argument("--training-samples", type=int, default=None,
                   help="phantoms the oracle and the shortcut classifier are trained on, if "
                        "not cached (default 6000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-table", default=None,
                   help="also write the table against the paper (e.g. docs/results.md)")
    add_repository_arg(p)
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> None:
    from styleprobe.evaluation.report import results_table, write_report

    settings = settings_from_args(args)
    out = Path(args.out or Path(settings.store_dir) / "evaluation")
    config = _config(args, settings)
    reports: dict[str, Path] = {}
    results = []
    for name in args.model_sets:
        evaluation = _evaluate_one(name, args.phantoms, config, settings)
        paths = write_report(evaluation, out / name)
        reports[name] = paths["markdown"]
        results.append(evaluation.results)
        met = [t for t in evaluation.results["targets"] if t["met"]]
        missed = [t["name"] for t in evaluation.results["targets"] if t["met"] is False]
        print(f"{name}: {len(met)} of {len(evaluation.results['targets'])} targets met"
              + (f"; missed: {'; '.join(missed)}" if missed else ""))
        print(f"  report: {paths['html']}")
    if args.results_table:
        table = Path(args.results_table)
        links = {name: os.path.relpath(path, table.parent) for name, path in reports.items()}
        table.parent.mkdir(parents=True, exist_ok=True)
        table.write_text(results_table(results, links))
        print(f"results table: {table}")


def _config(args: argparse.Namespace, settings: Settings) -> EvaluationSettings:
    from styleprobe.evaluation.evaluate import EvaluationSettings
    from styleprobe.explain.spec import JobSpecError, LambdaGrid, ProbeSettings

    samples = settings.probe_samples if args.probe_samples is None else args.probe_samples
    try:
        lambdas = LambdaGrid.parse(args.lambdas)
        probe = ProbeSettings(samples=samples, seed=args.seed)
    except JobSpecError as exc:
        raise UserError(str(exc)) from exc
    config = EvaluationSettings(n=args.n, lambdas=lambdas, probe=probe, seed=args.seed)
    if args.training_samples is not None:
        if args.training_samples < 64:
            raise UserError("--training-samples must be at least 64")
        config = replace(config,
                         oracle=replace(config.oracle, train_samples=args.training_samples,
                                        test_samples=max(64, args.training_samples // 6)),
                         shortcut=replace(config.shortcut,
                                          train_samples=args.training_samples,
                                          test_samples=max(64, args.training_samples // 6)))
    return config


def _evaluate_one(name: str, phantoms: str | None, config: EvaluationSettings,
                  settings: Settings) -> Evaluation:
    from styleprobe.backends import open_backend
    from styleprobe.evaluation.evaluate import EvaluationError, evaluate
    from styleprobe.evaluation.localization import eager_classifier
    from styleprobe.explain.direction import DirectionError
    from styleprobe.storage.local import LocalStore

    repository = Path(settings.model_repository)
    backend = open_backend(settings, name)
    try:
        kind = phantoms or backend.model_set.training.get("data")
        if kind is None:
            raise UserError(f"model set {name!r} does not say which phantoms it was trained "
                            "on: pass --phantoms knee|histology")
        try:
            return evaluate(backend, LocalStore(settings.store_dir), kind,
                            Path(settings.evaluation_dir),
                            eager_classifier(repository, backend.model_set), config,
                            progress=lambda stage: print(f"  {name}: {stage} done",
                                                         flush=True))
        except (EvaluationError, DirectionError) as exc:
            raise UserError(str(exc)) from exc
    finally:
        backend.close()

