"""``styleprobe export``: measure a trained model set, export it as TorchScript, write its card."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from styleprobe.cli.common import UserError, names
from styleprobe.cli.train import PHANTOM_CHANNELS, check_training_data, load_training_data
from styleprobe.modelset import COVERAGE_SAMPLES

if TYPE_CHECKING:
    from torch import nn

    from styleprobe.data.datasets import ImageSet
    from styleprobe.models.stylegan2 import Generator
    from styleprobe.training.classifier_file import ClassifierFile

NUISANCE = {
    "knee": ["rotation", "exposure", "contrast", "bone_width", "shift_x", "shift_y", "marker"],
    "histology": ["stain_intensity", "hue_shift", "blur", "marker"],
}

MIN_CLASS_SAMPLES = 100  # generated samples for a class balance worth the name


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model set (TorchScript + manifest + card)")
    p.add_argument("--name", required=True, help="model-set name, e.g. knee-oa")
    p.add_argument("--gan", required=True, help="GAN checkpoint.pt")
    p.add_argument("--encoder", required=True, help="encoder.pt")
    p.add_argument("--classifier", required=True,
                   help="classifier.pt of styleprobe train classifier, or a TorchScript "
                        "classifier of your own (then give --class-names)")
    p.add_argument("--class-names", default=None,
                   help="comma-separated class names in logit order (default: the "
                        "checkpoint's; required for a TorchScript classifier)")
    p.add_argument("--data", required=True,
                   help="held-out data: 'knee', 'histology' (held-out phantoms) or a folder")
    p.add_argument("--n", type=int, default=2000, help="held-out phantoms to measure on")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", default=None, help="default target class")
    p.add_argument("--nuisance", default=None,
                   help="comma-separated factor columns to give directions (default: the "
                        "phantom set's nuisance factors, or every numeric column of a "
                        "folder's factors.csv other than file and label)")
    p.add_argument("--description", default="")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--force", action="store_true",
                   help="replace the set's models of this --version if they exist")
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--card-dir", default="docs/model-cards")
    p.add_argument("--class-samples", type=int, default=COVERAGE_SAMPLES,
                   help="generated samples on which the class balance is measured "
                        f"(default {COVERAGE_SAMPLES}; at least {MIN_CLASS_SAMPLES})")
    p.add_argument("--coverage", action="store_true",
                   help="measure the generator's coverage of every oracle factor and its "
                        "precision/recall for the card (phantoms only; trains the "
                        "evaluation's oracle into STYLEPROBE_EVALUATION_DIR if not cached)")
    p.add_argument("--training-record", default=None,
                   help="optional JSON file of extra facts for the card (a JSON object, "
                        "e.g. the machine), shown as training.record; the run.json beside "
                        "each checkpoint is read without it")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> None:
    import torch

    from styleprobe.models.stylegan2 import seeded_z
    from styleprobe.training.assess import assess
    from styleprobe.training.classifier_file import (
        ClassifierFileError,
        check_contract,
        read_classifier,
    )
    from styleprobe.training.encoder import load_encoder
    from styleprobe.training.export import export_model_set, version_exists
    from styleprobe.training.gan import load_generator
    from styleprobe.training.grids import save_grid
    from styleprobe.training.modelcard import write_model_card

    if version_exists(Path(args.repository), args.name, args.version) and not args.force:
        raise UserError(f"model set {args.name!r} version {args.version} exists in "
                        f"{args.repository} (--force replaces it, or give another --version)")
    if args.class_samples < MIN_CLASS_SAMPLES:
        raise UserError(f"--class-samples must be at least {MIN_CLASS_SAMPLES}, got "
                        f"{args.class_samples}")
    extra = _extra_record(args.training_record)
    try:
        classifier = read_classifier(Path(args.classifier))
    except ClassifierFileError as exc:
        raise UserError(str(exc)) from exc
    class_names = names(args.class_names) if args.class_names else classifier.class_names
    if not class_names:
        raise UserError(f"{args.classifier} is TorchScript: name its classes with "
                        "--class-names (in logit order)")
    target = args.target or class_names[-1]
    if target not in class_names:
        raise UserError(f"--target {target!r} is not one of {class_names}")
    checked = check_training_data(args, len(class_names))
    G = load_generator(Path(args.gan))
    E, enc_state = load_encoder(Path(args.encoder))
    C = classifier.module
    cfg = G.cfg
    if (E.resolution, E.channels, E.w_dim) != (cfg.resolution, cfg.channels, cfg.w_dim):
        raise UserError("the encoder was not trained for this generator (resolution, "
                        "channels or w_dim differ)")
    try:
        check_contract(C, cfg.channels, cfg.resolution, class_names)
    except ClassifierFileError as exc:
        raise UserError(f"{args.classifier}: {exc}") from exc
    test = load_training_data(args, cfg.resolution, cfg.channels, held_out=True, n=args.n,
                              classes=len(class_names), checked=checked)
    if args.nuisance is not None:
        nuisance = names(args.nuisance)
    else:
        nuisance = NUISANCE.get(args.data, list(test.factors) if checked else [])
    unknown = [c for c in nuisance if c not in test.factors]
    if unknown:
        raise UserError(f"no factor column(s) {unknown} in the held-out data")

    measured = assess(G, E, C, test, class_names.index(target), 0.5, nuisance, args.seed)
    training = _training(args, cfg.to_dict(), test, classifier, enc_state, extra)
    result = export_model_set(
        name=args.name, G=G, encoder=E, classifier=C, class_names=class_names,
        default_target=target, repository=Path(args.repository),
        description=args.description, version=args.version,
        max_pixel_mse=measured["metrics"]["quality_gate_max_pixel_mse"],
        training=training,
        metrics={**measured["metrics"],
                 **_class_balance(G, C, class_names, test, args.class_samples),
                 **(_factor_coverage(G, test, args.data)
                    if args.coverage and args.data in PHANTOM_CHANNELS else {})},
        nuisance_directions=measured["nuisance_directions"],
    )
    model_set = result.model_set
    card_dir = Path(args.card_dir)
    card_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        samples = G(seeded_z(32, cfg.z_dim, seed=2024), noise_mode="const")
    save_grid(samples, card_dir / f"{args.name}-samples.png", columns=8)
    card = write_model_card(model_set, card_dir, f"{args.name}-samples.png")
    print(json.dumps({"model_set": args.name, "parity_max_abs_diff": result.parity,
                      "card": str(card), **{k: v for k, v in model_set.metrics.items()
                                            if not isinstance(v, dict | list)}}, indent=2))


def _extra_record(path: str | None) -> dict[str, Any] | None:
    """The JSON object of ``--training-record`` (None without one)."""
    if path is None:
        return None
    try:
        extra = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--training-record {path} is not a readable JSON file: {exc}") from exc
    if not isinstance(extra, dict):
        raise UserError(f"--training-record {path} must hold a JSON object")
    return extra


def _training(args: argparse.Namespace, generator: dict[str, Any], test: ImageSet,
              classifier: ClassifierFile, enc_state: dict[str, Any],
              extra: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest's ``training``: the training data (from the GAN's run record), the
    held-out data, each part with its run record, and the export's own command."""
    from styleprobe.training.checkpoint import load_checkpoint
    from styleprobe.training.export import run_summary
    from styleprobe.training.runrecord import command_line

    gan_state = load_checkpoint(Path(args.gan), kind="gan")
    runs = {part: run_summary(Path(path)) for part, path in
            (("generator", args.gan), ("encoder", args.encoder),
             ("classifier", args.classifier))}
    data = (runs["generator"] or {}).get("data") or {}
    name = data.get("phantoms") or Path(data.get("folder") or args.data).name
    training: dict[str, Any] = {
        "data": name, "data_fingerprint": data or None,
        "held_out": {"data": args.data if args.data in PHANTOM_CHANNELS
                     else Path(args.data).name, "images": len(test)},
        "generator": {"config": generator, "steps": gan_state["step"],
                      "batch": gan_state["train_config"]["batch"]},
        "encoder": {"steps": enc_state["step"], "metrics": enc_state.get("metrics", {})},
        "classifier": {"file": Path(args.classifier).name, "kind": classifier.kind,
                       **classifier.training},
        "export_command": command_line(),
    }
    for part, run in runs.items():
        if run is not None:
            training[part]["run"] = run
    if extra is not None:
        training["record"] = extra
    return training


def _factor_coverage(G: Generator, test: ImageSet, phantoms: str) -> dict[str, Any]:
    """The generator's coverage of every oracle factor and its precision/recall against
    the held-out phantoms (the evaluation's oracle, trained and cached if absent)."""
    import torch

    from styleprobe.config import Settings
    from styleprobe.evaluation.coverage import card_metrics, measure_coverage
    from styleprobe.evaluation.oracle import load_or_train_oracle
    from styleprobe.models.stylegan2 import seeded_z
    from styleprobe.training.checkpoint import to_tensor

    oracle = load_or_train_oracle(Path(Settings.from_env().evaluation_dir), phantoms,
                                  G.cfg.resolution)
    with torch.no_grad():
        fake = torch.cat([G(z, noise_mode="const").clamp(-1.0, 1.0) for z in
                          seeded_z(len(test), G.cfg.z_dim, seed=2025).split(256)])
    return card_metrics(measure_coverage(oracle, to_tensor(test.images).numpy(),
                                         fake.numpy(), test.factors))


def _class_balance(G: Generator, classifier: nn.Module, class_names: list[str],
                   test: ImageSet, samples: int) -> dict[str, Any]:
    """The metrics of the generator's coverage of the classes against the held-out data's
    class shares; a class off by more than BALANCE_MARGIN, or (almost) never drawn, is a
    finding, also warned on stderr."""
    import numpy as np
    import torch

    from styleprobe.training.add_classifier import coverage_findings, generator_coverage
    from styleprobe.training.export import balance_findings

    def generate(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return G(torch.from_numpy(z), noise_mode="const").clamp(-1.0, 1.0).numpy()

    coverage = generator_coverage(generate, G.cfg.z_dim, classifier, class_names, samples)
    metrics: dict[str, Any] = {"generator_coverage": coverage,
                               "generator_coverage_samples": samples}
    findings = coverage_findings(coverage, samples)
    if test.labels is not None:
        counts = np.bincount(test.labels, minlength=len(class_names))
        data = {name: float(counts[k] / len(test)) for k, name in enumerate(class_names)}
        metrics["data_class_shares"] = data
        findings += balance_findings(coverage, data, samples)
    for finding in findings:
        print(f"styleprobe: warning: {finding}", file=sys.stderr)
    return {**metrics, "findings": findings}
