"""The ``styleprobe`` command line: data, training, export, and (later) explanations.

Every user error ends with one line on stderr and exit code 2; nothing half-written is
left behind.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from styleprobe.logs import configure_logging

EXIT_USAGE = 2
log = logging.getLogger("styleprobe")


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit code 2."""


def _data_make(args: argparse.Namespace) -> None:
    from styleprobe.data.datasets import phantom_set, render, write_folder

    if args.n <= 0:
        raise UserError("--n must be a positive number of images")
    phantoms = phantom_set(args.kind, seed=args.seed, size=args.size,
                           shortcut_rate=args.shortcut_rate)
    data = render(phantoms, args.n)
    write_folder(data, Path(args.out))
    print(f"wrote {args.n} {args.kind} phantoms and factors.csv to {args.out}")


def _training_data(args: argparse.Namespace, size: int, channels: int, start: int = 0):
    from styleprobe.data.datasets import load_folder, phantom_set, render

    if args.data in ("knee", "histology"):
        return render(phantom_set(args.data, seed=args.seed, size=size,
                                  shortcut_rate=getattr(args, "shortcut_rate", None)),
                      args.n, start=start)
    return load_folder(Path(args.data), size=size, channels=channels)


def _channels(args: argparse.Namespace) -> int:
    if args.data == "knee":
        return 1
    if args.data == "histology":
        return 3
    return args.channels


def _train_gan(args: argparse.Namespace) -> None:
    from styleprobe.models.stylegan2 import GeneratorConfig
    from styleprobe.training.gan import GanTrainConfig, GanTrainer, train_gan

    out = Path(args.out)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists() and not args.restart:
        trainer = GanTrainer.resume(ckpt, device=args.device)
        log.info("resuming %s at step %d", ckpt, trainer.step)
    else:
        cfg = GeneratorConfig(resolution=args.resolution, channels=_channels(args),
                              z_dim=args.w_dim, w_dim=args.w_dim,
                              mapping_layers=args.mapping_layers,
                              channel_base=args.channel_base, channel_max=args.channel_max)
        trainer = GanTrainer(cfg, GanTrainConfig(batch=args.batch, seed=args.seed),
                             device=args.device)
    data = _training_data(args, trainer.gen_cfg.resolution, trainer.gen_cfg.channels)
    train_gan(trainer, data, out, iterations=args.iterations, minutes=args.minutes)
    print(f"gan checkpoint at step {trainer.step}: {ckpt}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="styleprobe", description=__doc__)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make phantom data sets").add_subparsers(
        dest="data_command", required=True)
    make = data.add_parser("make", help="write phantoms as PNG files plus factors.csv")
    make.add_argument("kind", choices=["knee", "histology"])
    make.add_argument("--n", type=int, default=1000)
    make.add_argument("--size", type=int, default=64)
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--shortcut-rate", type=float, default=None,
                      help="plant the corner marker: P(marker | positive) = rate")
    make.add_argument("--out", required=True)
    make.set_defaults(func=_data_make)

    train = sub.add_parser("train", help="train networks").add_subparsers(
        dest="train_command", required=True)
    gan = train.add_parser("gan", help="train a StyleGAN2 (resumes from OUT/checkpoint.pt)")
    _data_args(gan)
    gan.add_argument("--resolution", type=int, default=64)
    gan.add_argument("--w-dim", type=int, default=512)
    gan.add_argument("--mapping-layers", type=int, default=8)
    gan.add_argument("--channel-base", type=int, default=4096)
    gan.add_argument("--channel-max", type=int, default=512)
    gan.add_argument("--batch", type=int, default=32)
    gan.add_argument("--iterations", type=int, default=2000)
    gan.add_argument("--minutes", type=float, default=None, help="stop after this long")
    gan.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    gan.set_defaults(func=_train_gan)
    return parser


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True,
                   help="'knee', 'histology' (phantoms) or a folder of images")
    p.add_argument("--n", type=int, default=20000, help="phantoms to render")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3],
                   help="image channels when --data is a folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--out", required=True)


def run(argv: Sequence[str] | None = None,
        parser_factory: Callable[[], argparse.ArgumentParser] = build_parser) -> int:
    """Parse and run; returns the exit code."""
    from styleprobe.data.datasets import DataError
    from styleprobe.training.checkpoint import CheckpointError

    args = parser_factory().parse_args(argv)
    configure_logging(args.log_level)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except (UserError, DataError, CheckpointError, ValueError) as exc:
        print(f"styleprobe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def main() -> None:
    sys.exit(run())
