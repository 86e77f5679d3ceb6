"""``styleprobe data make``: write phantom data sets in the folder format."""

from __future__ import annotations

import argparse
from pathlib import Path

from styleprobe.cli.common import UserError


def register(sub: argparse._SubParsersAction) -> None:
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
    make.set_defaults(func=_make)


def _make(args: argparse.Namespace) -> None:
    from styleprobe.data.datasets import phantom_set, render, write_folder

    if args.n <= 0:
        raise UserError("--n must be a positive number of images")
    if args.size < 8:
        raise UserError("--size must be at least 8 pixels")
    phantoms = phantom_set(args.kind, seed=args.seed, size=args.size,
                           shortcut_rate=args.shortcut_rate)
    write_folder(render(phantoms, args.n), Path(args.out))
    print(f"wrote {args.n} {args.kind} phantoms and factors.csv to {args.out}")
