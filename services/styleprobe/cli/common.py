"""What every command group shares: the user-error types, the exit code, and the options
of the commands that explain images (``explain``, ``demo``, ``cohort``)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

from styleprobe.config import Settings
from styleprobe.data.datasets import DataError
from styleprobe.explain.spec import LambdaGrid, ProbeSettings, SearchSettings
from styleprobe.modelset import ModelSetError
from styleprobe.training.checkpoint import CheckpointError

if TYPE_CHECKING:
    from styleprobe.explain.spec import JobSpec
    from styleprobe.modelset import ModelSet

EXIT_USAGE = 2
VALUES_MAY_START_WITH_MINUS = ("--lambdas",)  # "--lambdas -4:4:17"


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit code 2."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, DataError, CheckpointError, ModelSetError)


def attach_values(argv: Sequence[str]) -> list[str]:
    """``--lambdas -4:4:17`` as ``--lambdas=-4:4:17``: argparse takes a separate value
    that starts with '-' for an option."""
    attached: list[str] = []
    args = iter(argv)
    for arg in args:
        value = next(args, None) if arg in VALUES_MAY_START_WITH_MINUS else None
        attached.append(arg if value is None else f"{arg}={value}")
    return attached


def add_repository_arg(p: argparse.ArgumentParser) -> None:
    """``--repository``: the model repository of a command that reads model sets."""
    p.add_argument("--repository", default=None,
                   help="model repository to read model sets from (default: "
                        "STYLEPROBE_MODEL_REPOSITORY, else the bundled one)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    """``--threads`` after the subcommand too (it is also a global option, before it)."""
    p.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                   help="torch CPU threads (default: torch's choice)")


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that explains images in this process: target, λ grid,
    probe, search, nuisances, output, backend, model repository and threads."""
    search = SearchSettings()
    p.add_argument("--target", default=None,
                   help="class to explain (default: the model set's default target)")
    p.add_argument("--lambdas", default=str(LambdaGrid()),
                   help=f"λ grid start:stop:steps (default {LambdaGrid()})")
    p.add_argument("--out", default=None, help="artifact folder (default: STYLEPROBE_STORE_DIR)")
    p.add_argument("--probe-samples", type=int, default=None,
                   help="latents sampled to probe the direction (default: "
                        "STYLEPROBE_PROBE_SAMPLES)")
    p.add_argument("--probe-seed", type=int, default=ProbeSettings().seed)
    p.add_argument("--search-rounds", type=int, default=search.rounds,
                   help=f"batched rounds of the flip search (default {search.rounds})")
    p.add_argument("--search-points", type=int, default=search.points,
                   help=f"λ values per search round (default {search.points})")
    p.add_argument("--orthogonalize", default="",
                   help="comma-separated nuisance directions to remove, e.g. exposure,rotation")
    p.add_argument("--backend", default=None, help="model backend (default: STYLEPROBE_BACKEND)")
    add_repository_arg(p)
    add_threads_arg(p)


def names(text: str) -> list[str]:
    """A comma-separated list of names, without blanks."""
    return [name.strip() for name in text.split(",") if name.strip()]


def job_spec_from_args(args: argparse.Namespace, model_set: ModelSet,
                       settings: Settings) -> JobSpec:
    """The job spec of the options of :func:`add_common_args`, checked against
    ``model_set`` (JobSpecError otherwise)."""
    from styleprobe.explain.spec import JobSpec

    samples = settings.probe_samples if args.probe_samples is None else args.probe_samples
    return JobSpec.create(model_set, args.target, args.lambdas,
                          ProbeSettings(samples=samples, seed=args.probe_seed),
                          SearchSettings(args.search_rounds, args.search_points),
                          names(args.orthogonalize))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with ``--backend`` and ``--repository`` applied
    where the command has them."""
    settings = Settings.from_env()
    return replace(settings, backend=getattr(args, "backend", None) or settings.backend,
                   model_repository=getattr(args, "repository", None)
                   or settings.model_repository)


@contextmanager
def user_errors() -> Iterator[None]:
    """Errors caused by the input or the options, and model backends that cannot serve
    (unknown, unreachable, failing), become one-line errors with exit code 2."""
    from styleprobe.backends.base import BackendError
    from styleprobe.data.codecs import ImageDecodeError
    from styleprobe.explain.spec import JobSpecError

    try:
        yield
    except (ImageDecodeError, JobSpecError, BackendError) as exc:
        raise UserError(str(exc)) from exc
