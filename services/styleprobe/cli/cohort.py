"""``styleprobe cohort run FOLDER``: explain every image of a folder, in this process.

Results go to the artifact folder (``--out``, default ``STYLEPROBE_STORE_DIR``): each
image as a job under ``jobs/``, the cohort under ``cohorts/<id>/`` with ``summary.csv``,
``summary.parquet`` and ``report.html``. The cohort id is derived from the folder and the
settings, so running the same command again resumes an interrupted cohort without
redoing finished images. (``cohort submit|watch|download``, the service mode, are to join
``run`` here.)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.common import UserError, add_common_args, settings_from_args, user_errors
from styleprobe.cli.explain import DEFAULT_MODEL_SET
from styleprobe.cohort.ledger import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from styleprobe.cohort.rows import ImageRow
    from styleprobe.cohort.summary import CohortSummary
    from styleprobe.storage.local import LocalStore


def register(sub: argparse._SubParsersAction) -> None:
    cohort = sub.add_parser("cohort", help="explain a whole cohort of images")
    actions = cohort.add_subparsers(dest="cohort_command", required=True)
    run = actions.add_parser(
        "run", help="explain every image of a folder in this process (no servers); the "
                    "same command resumes an interrupted run")
    run.add_argument("folder", help="folder of PNG, JPEG, TIFF, DICOM (.dcm) or .npy files")
    run.add_argument("--model-set", default=DEFAULT_MODEL_SET)
    run.add_argument("--target", default=None,
                     help="class to explain (default: the model set's default target)")
    add_common_args(run)
    run.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                     help=f"images per chunk (default {DEFAULT_CHUNK_SIZE})")
    run.add_argument("--cohort-id", default=None,
                     help="name of the cohort (default: derived from the folder and settings)")
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    from styleprobe.backends import open_backend
    from styleprobe.cohort.ledger import CohortError, CohortLedger, CohortSpec
    from styleprobe.cohort.runner import CohortRunner, list_folder
    from styleprobe.explain.direction import ProbeSettings
    from styleprobe.explain.engine import Explainer
    from styleprobe.explain.lambdas import parse_lambdas
    from styleprobe.storage.local import LocalStore

    settings = settings_from_args(args)
    folder = Path(args.folder)
    out = Path(args.out or settings.store_dir)
    samples = settings.probe_samples if args.probe_samples is None else args.probe_samples
    with user_errors(), _cohort_errors(CohortError):
        if args.chunk_size < 1:
            raise UserError(f"--chunk-size must be at least 1, got {args.chunk_size}")
        images = list_folder(folder)
        lambdas = parse_lambdas(args.lambdas).spec
        probe = asdict(ProbeSettings(samples=samples, seed=args.probe_seed))
        orthogonalize = tuple(sorted({n.strip() for n in args.orthogonalize.split(",")
                                      if n.strip()}))
        backend = open_backend(settings, args.model_set)
        try:
            model_set = backend.model_set
            target = args.target or model_set.default_target
            identity = {"folder": str(folder.resolve()), "model_set": model_set.name,
                        "target": target, "lambdas": lambdas, "probe": probe,
                        "orthogonalize": orthogonalize}
            spec = CohortSpec(
                cohort_id=args.cohort_id or _cohort_id(identity), model_set=model_set.name,
                target=target, threshold=model_set.classifier.threshold, lambdas=lambdas,
                probe=probe, orthogonalize=orthogonalize)
            store = LocalStore(out)
            ledger = CohortLedger(store, spec.cohort_id)
            runner = CohortRunner(Explainer(backend, store), ledger, lambda name: folder / name)
            print(f"cohort {spec.cohort_id}: {len(images)} images in {folder}, target {target}",
                  file=sys.stderr)
            with _progress_bar(len(images)) as on_image:
                summary = runner.run(spec, images, on_image, chunk_size=args.chunk_size)
        finally:
            backend.close()
    _print_summary(summary, store)


def _cohort_id(identity: dict[str, object]) -> str:
    """A short id that is the same for the same folder and settings."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"cohort-{digest[:12]}"


def _print_summary(summary: CohortSummary, store: LocalStore) -> None:
    print(f"{summary.total} images: {summary.done} explained, {summary.failed} failed"
          + (f", {summary.pending} pending" if summary.pending else ""))
    if summary.done:
        print(f"unreliable reconstructions: {summary.unreliable} of {summary.done}; "
              f"prediction flips within the grid: {summary.flipped} of {summary.done}")
    for name in ("csv", "parquet", "report"):
        print(f"{name}: {store.path(summary.outputs[name])}")


@contextmanager
def _cohort_errors(*kinds: type[Exception]) -> Iterator[None]:
    try:
        yield
    except kinds as exc:
        raise UserError(str(exc)) from exc


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[ImageRow, bool], None]]:
    """A per-image progress callback: a tqdm bar with done/failed/skipped counts."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit="image", disable=not sys.stderr.isatty(), dynamic_ncols=True)
    counts = {"done": 0, "failed": 0, "skipped": 0}

    def update(row: ImageRow, skipped: bool) -> None:
        counts["skipped" if skipped else row.status] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    try:
        yield update
    finally:
        bar.close()
