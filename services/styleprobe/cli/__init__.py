"""The ``styleprobe`` command line.

Each sub-module registers one group of commands (``data``, ``train``, ``export``, ...).
Every user error ends with one line on stderr and exit code 2; nothing half-written is
left behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from styleprobe.cli import (
    attributes,
    client,
    cohort,
    data,
    evaluate,
    explain,
    export,
    modelset,
    serve,
    train,
    triton,
)
from styleprobe.cli.common import EXIT_USAGE, USER_ERRORS, attach_values
from styleprobe.logs import configure_logging

COMMAND_GROUPS = [data, train, export, modelset, explain, attributes, evaluate, cohort, triton,
                  serve, client]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="styleprobe",
        description="Explain medical image classifiers with StyleGAN2 latent traversals.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--log-level", default="WARNING")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse and run; returns the exit code."""
    args = build_parser().parse_args(attach_values(sys.argv[1:] if argv is None else argv))
    configure_logging(args.log_level)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"styleprobe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def main() -> None:
    sys.exit(run())
