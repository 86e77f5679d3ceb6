"""``styleprobe model-set add-classifier``: a model set for a classifier of one's own.

The classifier (TorchScript, or a ``styleprobe train classifier`` checkpoint) is checked
against the contract of the base set's images before anything is written, measured (the
generator's coverage of its classes; with ``--held-out``, its AUC, its agreement on
reconstructions and the share the quality gate flags), and written as a new set that
shares the base set's generator and encoder. Findings about the pair of models (a class
the generator rarely draws) are printed and recorded in the manifest and the card.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.common import UserError, add_repository_arg, names, settings_from_args
from styleprobe.modelset import COVERAGE_SAMPLES

if TYPE_CHECKING:
    from styleprobe.modelset import ModelSet
    from styleprobe.training.classifier_file import ClassifierFile


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("model-set", help="add model sets to a repository").add_subparsers(
        dest="model_set_command", required=True)
    add = group.add_parser(
        "add-classifier", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="a new model set: your classifier with an existing set's generator and encoder")
    add.add_argument("classifier", type=Path,
                     help="TorchScript file (or a styleprobe classifier checkpoint) mapping "
                          "images [N, C, R, R] in [-1, 1] to logits [N, K]")
    add.add_argument("--base", required=True,
                     help="the model set whose generator and encoder to use, e.g. knee-oa")
    add.add_argument("--name", required=True, help="the new model set's name")
    add.add_argument("--class-names", default=None,
                     help="comma-separated names of the K classes, in logit order (default: "
                          "the checkpoint's, or the base set's)")
    add.add_argument("--target", default=None,
                     help="default class to explain (default: the last class)")
    add.add_argument("--held-out", type=Path, default=None,
                     help="labelled images (factors.csv with file and label) to measure on")
    add.add_argument("--samples", type=int, default=COVERAGE_SAMPLES,
                     help="generated samples to measure the generator's class coverage on")
    add_repository_arg(add)
    add.add_argument("--card-dir", type=Path, default=None,
                     help="also write the set's model card (Markdown) into this folder")
    add.add_argument("--force", action="store_true", help="replace a set of the same name")
    add.set_defaults(func=_add_classifier)


def _add_classifier(args: argparse.Namespace) -> None:
    from styleprobe.training.add_classifier import add_classifier

    repository = Path(settings_from_args(args).model_repository)
    if args.samples < 100:
        raise UserError(f"--samples must be at least 100, got {args.samples}")
    with classifier_errors(args.classifier):
        classifier, class_names, target = own_classifier(
            args.classifier, repository, args.base, args.class_names, args.target)
        added = add_classifier(repository, args.base, classifier, args.name, class_names,
                               target, args.held_out, args.samples, args.force)
    model_set = added.model_set
    if args.card_dir is not None:
        _write_card(model_set, repository, args.card_dir)
    print(json.dumps({"model_set": model_set.name, "repository": str(repository),
                      "classifier": model_set.models["classifier"].version_id,
                      **model_set.metrics}, indent=2))
    for finding in added.findings:
        print(f"styleprobe: finding: {finding}", file=sys.stderr)


@contextmanager
def classifier_errors(path: Path) -> Iterator[None]:
    """A bad classifier file or model set as a one-line user error."""
    from styleprobe.modelset import ModelSetError
    from styleprobe.training.classifier_file import ClassifierFileError

    try:
        yield
    except ClassifierFileError as exc:
        raise UserError(f"{path}: {exc}") from exc
    except ModelSetError as exc:
        raise UserError(str(exc)) from exc


def own_classifier(path: Path, repository: Path, base: str, class_names: str | None,
                   target: str | None) -> tuple[ClassifierFile, list[str], str]:
    """The classifier in ``path``, its class names (given, the checkpoint's, or the base
    set's) and its target (given, or the last class)."""
    from styleprobe.modelset import load_model_set
    from styleprobe.training.classifier_file import read_classifier

    base_set = load_model_set(repository, base)
    classifier = read_classifier(path)
    named = (names(class_names) if class_names
             else classifier.class_names or base_set.classifier.class_names)
    return classifier, named, target or named[-1]


def _write_card(model_set: ModelSet, repository: Path, card_dir: Path) -> None:
    import numpy as np
    import torch

    from styleprobe.backends.local import LocalBackend
    from styleprobe.training.grids import save_grid
    from styleprobe.training.modelcard import write_model_card

    card_dir.mkdir(parents=True, exist_ok=True)
    backend = LocalBackend(repository, model_set.name)
    try:
        z = np.random.default_rng(2024).standard_normal((32, model_set.z_dim))
        samples = backend.synthesis(backend.mapping(z.astype(np.float32)))
    finally:
        backend.close()
    save_grid(torch.from_numpy(samples), card_dir / f"{model_set.name}-samples.png", columns=8)
    card = write_model_card(model_set, card_dir, f"{model_set.name}-samples.png")
    print(f"card: {card}", file=sys.stderr)
