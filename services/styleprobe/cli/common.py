"""What every command group shares: the user-error types, the exit code, and the options
of the commands that explain images (``explain``, ``demo``, ``cohort``)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from styleprobe.config import Settings
from styleprobe.data.datasets import DataError
from styleprobe.explain.lambdas import DEFAULT_LAMBDAS
from styleprobe.modelset import ModelSetError
from styleprobe.training.checkpoint import CheckpointError

EXIT_USAGE = 2
# λ specs start with a minus sign: let "--lambdas -4:4:17" through as a value
LAMBDA_SPEC_OR_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[\d.]*:")


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit code 2."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, DataError, CheckpointError, ModelSetError)


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that explains images: λ grid, output, probe, backend."""
    p._negative_number_matcher = LAMBDA_SPEC_OR_NUMBER
    p.add_argument("--lambdas", default=DEFAULT_LAMBDAS,
                   help=f"λ grid start:stop:steps (default {DEFAULT_LAMBDAS})")
    p.add_argument("--out", default=None, help="artifact folder (default: STYLEPROBE_STORE_DIR)")
    p.add_argument("--probe-samples", type=int, default=None,
                   help="latents sampled to probe the direction (default: "
                        "STYLEPROBE_PROBE_SAMPLES, 10000)")
    p.add_argument("--probe-seed", type=int, default=0)
    p.add_argument("--orthogonalize", default="",
                   help="comma-separated nuisance directions to remove, e.g. exposure,rotation")
    p.add_argument("--backend", default=None, help="model backend (default: STYLEPROBE_BACKEND)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with ``--backend`` applied."""
    settings = Settings.from_env()
    return replace(settings, backend=args.backend or settings.backend)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors caused by the input or the options, and model backends that cannot serve
    (unknown, unreachable, failing), become one-line errors with exit code 2."""
    from styleprobe.backends.base import BackendError
    from styleprobe.data.codecs import ImageDecodeError
    from styleprobe.explain.direction import DirectionError
    from styleprobe.explain.lambdas import LambdaSpecError

    try:
        yield
    except (ImageDecodeError, LambdaSpecError, DirectionError, BackendError) as exc:
        raise UserError(str(exc)) from exc
