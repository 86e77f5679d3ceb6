"""``styleprobe export``: measure a trained model set, export it as TorchScript, write its card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from styleprobe.cli.common import UserError, names
from styleprobe.cli.train import PHANTOM_CHANNELS, load_training_data

NUISANCE = {
    "knee": ["rotation", "exposure", "contrast", "bone_width", "shift_x", "shift_y", "marker"],
    "histology": ["stain_intensity", "hue_shift", "blur", "marker"],
}


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
                   help="comma-separated factor columns to give directions "
                        "(default: the phantom set's nuisance factors)")
    p.add_argument("--description", default="")
    p.add_argument("--version", type=int, default=1)
    p.add_argument("--repository", default="model_repository")
    p.add_argument("--card-dir", default="docs/model-cards")
    p.add_argument("--training-record", default=None,
                   help="JSON file with training facts (times, steps) for the card")
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> None:
    import torch

    from styleprobe.models.stylegan2 import seeded_z
    from styleprobe.training.assess import assess
    from styleprobe.training.checkpoint import load_checkpoint
    from styleprobe.training.classifier_file import (
        ClassifierFileError,
        check_contract,
        read_classifier,
    )
    from styleprobe.training.encoder import load_encoder
    from styleprobe.training.export import export_model_set
    from styleprobe.training.gan import load_generator
    from styleprobe.training.grids import save_grid
    from styleprobe.training.modelcard import write_model_card

    G = load_generator(Path(args.gan))
    E, enc_state = load_encoder(Path(args.encoder))
    try:
        classifier = read_classifier(Path(args.classifier))
    except ClassifierFileError as exc:
        raise UserError(str(exc)) from exc
    class_names = names(args.class_names) if args.class_names else classifier.class_names
    if not class_names:
        raise UserError(f"{args.classifier} is TorchScript: name its classes with "
                        "--class-names (in logit order)")
    C = classifier.module
    target = args.target or class_names[-1]
    if target not in class_names:
        raise UserError(f"--target {target!r} is not one of {class_names}")
    cfg = G.cfg
    if (E.resolution, E.channels, E.w_dim) != (cfg.resolution, cfg.channels, cfg.w_dim):
        raise UserError("the encoder was not trained for this generator (resolution, "
                        "channels or w_dim differ)")
    try:
        check_contract(C, cfg.channels, cfg.resolution, class_names)
    except ClassifierFileError as exc:
        raise UserError(f"{args.classifier}: {exc}") from exc
    test = load_training_data(args, cfg.resolution, cfg.channels, held_out=True, n=args.n)
    if args.nuisance is not None:
        nuisance = [c for c in args.nuisance.split(",") if c]
    else:
        nuisance = NUISANCE.get(args.data, [])
    unknown = [c for c in nuisance if c not in test.factors]
    if unknown:
        raise UserError(f"no factor column(s) {unknown} in the held-out data")

    measured = assess(G, E, C, test, class_names.index(target), 0.5, nuisance, args.seed)
    metrics = dict(measured["metrics"])
    gan_state = load_checkpoint(Path(args.gan), kind="gan")
    training = {
        "data": args.data if args.data in PHANTOM_CHANNELS else str(Path(args.data).name),
        "generator": {"config": cfg.to_dict(), "steps": gan_state["step"],
                      "batch": gan_state["train_config"]["batch"]},
        "encoder": {"steps": enc_state["step"], "metrics": enc_state.get("metrics", {})},
        "classifier": {"file": Path(args.classifier).name, "kind": classifier.kind,
                       **classifier.training},
    }
    if args.training_record:
        training["record"] = json.loads(Path(args.training_record).read_text())
    result = export_model_set(
        name=args.name, G=G, encoder=E, classifier=C, class_names=class_names,
        default_target=target, repository=Path(args.repository),
        description=args.description, version=args.version,
        max_pixel_mse=metrics["quality_gate_max_pixel_mse"],
        training=training, metrics=metrics,
        nuisance_directions=measured["nuisance_directions"],
    )
    card_dir = Path(args.card_dir)
    card_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        samples = G(seeded_z(32, cfg.z_dim, seed=2024), noise_mode="const")
    save_grid(samples, card_dir / f"{args.name}-samples.png", columns=8)
    card = write_model_card(result.model_set, card_dir, f"{args.name}-samples.png")
    print(json.dumps({"model_set": args.name, "parity_max_abs_diff": result.parity,
                      "card": str(card), **{k: v for k, v in metrics.items()
                                            if not isinstance(v, dict)}}, indent=2))
