"""``styleprobe explain``, ``styleprobe demo`` and ``styleprobe models``: the embedded mode.

Models run in this process; results go to a local artifact folder (``--out``, default
``STYLEPROBE_STORE_DIR``) as ``jobs/<job id>/`` with ``report.html`` and ``manifest.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.common import (
    UserError,
    add_common_args,
    add_repository_arg,
    job_spec_from_args,
    settings_from_args,
    user_errors,
)
from styleprobe.config import Settings
from styleprobe.storage.local import LocalStore

if TYPE_CHECKING:
    from styleprobe.explain.inputs import ImageSource
    from styleprobe.explain.result import ExplanationResult

DEFAULT_MODEL_SET = "knee-oa"
DEMO_SEED = 20_241_126  # phantoms no model of the bundled sets was trained or tested on
DEMO_GRADE = 4  # the demo explains a knee with the clearest disease


def register(sub: argparse._SubParsersAction) -> None:
    explain = sub.add_parser("explain", help="explain the classifier's prediction on an image")
    explain.add_argument("image", help="PNG, JPEG, TIFF, DICOM or .npy file")
    explain.add_argument("--model-set", default=DEFAULT_MODEL_SET)
    explain.add_argument("--classifier", type=Path, default=None,
                         help="explain this classifier instead (TorchScript or checkpoint) "
                              "with the model set's generator and encoder; nothing is "
                              "registered (styleprobe model-set add-classifier does that)")
    explain.add_argument("--class-names", default=None,
                         help="with --classifier: its K class names, in logit order "
                              "(default: the model set's)")
    add_common_args(explain)
    explain.set_defaults(func=_explain)

    demo = sub.add_parser("demo", help="explain a knee phantom with clear disease")
    add_common_args(demo)
    demo.set_defaults(func=_demo)

    models = sub.add_parser("models", help="list model sets, their targets and versions")
    add_repository_arg(models)
    models.set_defaults(func=_models)


def _explain(args: argparse.Namespace) -> None:
    image = Path(args.image)
    if not image.is_file():
        raise UserError(f"{image} does not exist or is not a file")
    if args.classifier is None:
        _run(args, args.model_set, image, filename=image.name)
        return
    with tempfile.TemporaryDirectory(prefix="styleprobe-classifier-") as scratch:
        name = _unregistered(args, Path(scratch))
        args.backend = "local"
        _run(args, name, image, filename=image.name,
             repository=Path(scratch))


def _unregistered(args: argparse.Namespace, scratch: Path) -> str:
    """The name of a scratch set of ``--classifier`` with ``--model-set``'s models."""
    from styleprobe.cli.modelset import classifier_errors, own_classifier
    from styleprobe.training.add_classifier import unregistered_set

    if args.backend not in (None, "local"):
        raise UserError("--classifier runs in this process: it takes no --backend")
    repository = Path(settings_from_args(args).model_repository)
    with classifier_errors(args.classifier):
        classifier, class_names, target = own_classifier(
            args.classifier, repository, args.model_set, args.class_names, args.target)
        return unregistered_set(repository, args.model_set, classifier, class_names, target,
                                scratch).name


def _demo(args: argparse.Namespace) -> None:
    from styleprobe.data.knee import KneePhantoms

    settings = settings_from_args(args)
    resolution = _resolution(settings, DEFAULT_MODEL_SET)
    phantoms = KneePhantoms(seed=DEMO_SEED, size=resolution)
    index = next(i for i in range(10_000) if phantoms.sample(i).extra["kl_grade"] == DEMO_GRADE)
    print(f"demo: knee phantom {index} of seed {DEMO_SEED}, KL grade {DEMO_GRADE} (OA)")
    args.target = args.target or "OA"
    _run(args, DEFAULT_MODEL_SET, phantoms.sample(index).image,
         filename=f"knee-phantom-{index}.npy")


def _models(args: argparse.Namespace) -> None:
    from styleprobe.modelset import list_model_sets, load_model_set

    repository = Path(settings_from_args(args).model_repository)
    names = list_model_sets(repository)
    if not names:
        raise UserError(f"no model sets in {repository} (build them with "
                        "scripts/build_model_sets.sh, or name another with --repository)")
    for name in names:
        ms = load_model_set(repository, name)
        p = ms.preprocessing
        print(f"{name}: {p.resolution}x{p.resolution}, {p.channels} channel(s); classes "
              f"{', '.join(ms.classifier.class_names)} (default target {ms.default_target}); "
              f"nuisance directions: {', '.join(sorted(ms.nuisance_directions)) or 'none'}")
        for kind, entry in ms.models.items():
            print(f"  {kind:<10} {entry.version_id}")


def _resolution(settings: Settings, model_set: str) -> int:
    from styleprobe.modelset import load_model_set

    return load_model_set(Path(settings.model_repository), model_set).preprocessing.resolution


def _run(args: argparse.Namespace, model_set: str, image: ImageSource, filename: str,
         repository: Path | None = None) -> None:
    from styleprobe.backends import open_backend
    from styleprobe.explain.engine import Explainer

    settings = settings_from_args(args)
    if repository is not None:
        settings = replace(settings, model_repository=str(repository))
    out = Path(args.out or settings.store_dir)
    with user_errors():
        backend = open_backend(settings, model_set)
        try:
            spec = job_spec_from_args(args, backend.model_set, settings)
            with _progress_bar() as progress, _remove_if_left_empty(out):
                explainer = Explainer(backend, LocalStore(out), progress)
                result = explainer.explain(image, spec, filename=filename)
        finally:
            backend.close()
    _print_summary(result, LocalStore(out))


def _print_summary(result: ExplanationResult, store: LocalStore) -> None:
    fitted = result.input.description.get("fitted")
    if fitted:
        print(f"input: {fitted}")
    for line in result.summary_lines():
        print(line)
    print(f"report: {store.path(result.outputs['report']).resolve()}")
    print(f"manifest: {store.path(result.outputs['manifest']).resolve()}")


@contextmanager
def _remove_if_left_empty(folder: Path) -> Iterator[None]:
    """On failure, remove ``folder`` again if this run created it and left it empty."""
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
        raise


@contextmanager
def _progress_bar() -> Iterator[Callable[[str, float], None]]:
    """A progress callback that shows the current stage on a terminal (tqdm)."""
    from tqdm import tqdm

    bar = tqdm(total=100, disable=not sys.stderr.isatty(), leave=False,
               bar_format="{desc:<10} {bar} {percentage:3.0f}%")

    def update(stage: str, fraction: float) -> None:
        bar.set_description_str(stage)
        bar.n = round(100 * fraction)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()
