"""``styleprobe cohort run|submit|watch|download``: whole cohorts, in process or through
the service.

``run FOLDER`` explains every image of a folder in this process. Results go to the
artifact folder (``--out``, default ``STYLEPROBE_STORE_DIR``): each image as a job under
``jobs/``, the cohort under ``cohorts/<id>/`` with ``summary.csv``, ``summary.parquet``
and ``report.html``. The cohort id is derived from the folder and the settings, so
running the same command again resumes an interrupted cohort without redoing finished
images.

``draw IMAGE_JOB_ID...`` draws the pictures of images of a cohort run without them
(``--no-render-images``, the default: STYLEPROBE_COHORT_RENDER).

``submit`` sends a cohort to a running service (SubmitCohort: a prefix of the bucket, a
file of object keys, or a few local files inline) and prints its job id; ``watch`` shows
its progress (a tqdm bar from WatchJob) until it ends; ``download`` saves its summary
table (CSV, Parquet) and report once it has ended.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from styleprobe.cli.attributes import spec_with_attributes
from styleprobe.cli.common import (
    UserError,
    add_common_args,
    job_spec_from_args,
    names,
    settings_from_args,
    user_errors,
)
from styleprobe.cli.explain import DEFAULT_MODEL_SET
from styleprobe.cli.remote import add_server_arguments, download, service, watch_job
from styleprobe.cohort.ledger import DEFAULT_CHUNK_SIZE
from styleprobe.explain.spec import AttributeSettings

if TYPE_CHECKING:
    from tqdm import tqdm

    from styleprobe.api import pb
    from styleprobe.backends.base import ModelBackend
    from styleprobe.cohort.rows import ImageRow
    from styleprobe.cohort.summary import CohortSummary
    from styleprobe.explain.spec import JobSpec
    from styleprobe.storage.local import LocalStore


def register(sub: argparse._SubParsersAction) -> None:
    cohort = sub.add_parser("cohort", help="explain a whole cohort of images")
    actions = cohort.add_subparsers(dest="cohort_command", required=True)
    run = actions.add_parser(
        "run", help="explain every image of a folder in this process (no servers); the "
                    "same command resumes an interrupted run")
    run.add_argument("folder", help="folder of PNG, JPEG, TIFF, DICOM (.dcm) or .npy files")
    run.add_argument("--model-set", default=DEFAULT_MODEL_SET)
    add_common_args(run)
    run.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                     help=f"images per chunk (default {DEFAULT_CHUNK_SIZE})")
    run.add_argument("--attributes", type=int, default=0,
                     help="also find this many StyleSpace attributes and traverse each on "
                          "every image (summary columns attribute_<rank>_effect and "
                          "_flip_lambda; default 0: none)")
    run.add_argument("--render-images", action=argparse.BooleanOptionalAction, default=None,
                     help="draw each image's pictures (frames, GIF, strips, report); "
                          "--no-render-images: rows, manifests and the summary only, several "
                          "times faster, pictures drawn when asked for (default: "
                          "STYLEPROBE_COHORT_RENDER)")
    run.add_argument("--cohort-id", default=None,
                     help="name of the cohort (default: derived from the folder and settings)")
    run.set_defaults(func=_run)

    submit = actions.add_parser(
        "submit", help="submit a cohort to the service: objects under a prefix of its "
                       "bucket, a file of object keys, or local files sent inline")
    submit.add_argument("images", nargs="*", type=Path,
                        help="local image files, sent inline (a small batch: at most 64 "
                             "files and 8 MiB)")
    submit.add_argument("--prefix", default=None,
                        help="every object under this prefix of the bucket, e.g. inputs/study-7/")
    submit.add_argument("--keys-file", type=Path, default=None,
                        help="file of object keys, one a line ('-': standard input)")
    submit.add_argument("--model-set", default=DEFAULT_MODEL_SET)
    submit.add_argument("--target", default="",
                        help="class to explain (default: the model set's default target)")
    submit.add_argument("--lambdas", default="", help="λ grid start:stop:steps (default: the "
                                                      "server's)")
    submit.add_argument("--probe-samples", type=int, default=0,
                        help="latents sampled to probe the direction (default: the server's)")
    submit.add_argument("--probe-seed", type=int, default=0)
    submit.add_argument("--orthogonalize", default="",
                        help="comma-separated nuisance directions to remove")
    submit.add_argument("--attributes", type=int, default=0,
                        help="also find this many StyleSpace attributes (the service's "
                             "AttributeOptions; default 0: none)")
    submit.add_argument("--render-images", action=argparse.BooleanOptionalAction, default=None,
                        help="draw each image's pictures; --no-render-images: rows, manifests "
                             "and the summary only, pictures drawn when GetArtifact asks for "
                             "them (default: the server's STYLEPROBE_COHORT_RENDER)")
    submit.add_argument("--watch", action="store_true",
                        help="then show its progress until it ends (as cohort watch)")
    _server_args(submit)
    submit.set_defaults(func=_submit)

    watch = actions.add_parser(
        "watch", help="show a cohort's progress until it ends (a dropped stream is reopened "
                      "for up to 2 min)")
    watch.add_argument("job_id")
    _server_args(watch)
    watch.set_defaults(func=_watch)

    resume = actions.add_parser(
        "resume", help="resume a cohort that failed or was cancelled, under its id (the "
                       "images that finished are kept and skipped)")
    resume.add_argument("job_id")
    resume.add_argument("--watch", action="store_true",
                        help="then show its progress until it ends (as cohort watch)")
    _server_args(resume)
    resume.set_defaults(func=_resume)

    draw = actions.add_parser(
        "draw", help="draw the pictures of cohort images explained without them, in an "
                     "artifact folder (through the service, GetArtifact draws them)")
    draw.add_argument("image_job_ids", nargs="+", metavar="IMAGE_JOB_ID",
                      help="an image's job id (the summary's job_id column)")
    draw.add_argument("--out", default=None,
                      help="artifact folder (default: STYLEPROBE_STORE_DIR)")
    draw.set_defaults(func=_draw)

    download = actions.add_parser(
        "download", help="save a cohort's summary (CSV, Parquet) and report once it has ended")
    download.add_argument("job_id")
    download.add_argument("--out", type=Path, default=Path("."), help="folder to save them in")
    _server_args(download)
    download.set_defaults(func=_download)


def _server_args(p: argparse.ArgumentParser) -> None:
    add_server_arguments(p)
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds to wait for the service (default: no limit for watch)")


def _run(args: argparse.Namespace) -> None:
    from styleprobe.backends import open_backend
    from styleprobe.cohort.ledger import CohortError, CohortLedger, CohortSpec
    from styleprobe.cohort.runner import CohortRunner, list_folder
    from styleprobe.data.datasets import check_folder
    from styleprobe.storage.local import LocalStore

    settings = settings_from_args(args)
    folder = Path(args.folder)
    out = Path(args.out or settings.store_dir)
    with user_errors(), _cohort_errors(CohortError):
        if args.chunk_size < 1:
            raise UserError(f"--chunk-size must be at least 1, got {args.chunk_size}")
        images = list_folder(folder)
        backend = open_backend(settings, args.model_set)
        try:
            model_set = backend.model_set
            check_folder(folder, len(model_set.classifier.class_names))  # its factors.csv
            job = job_spec_from_args(args, model_set, settings)
            if args.attributes:
                job = spec_with_attributes(job, model_set, AttributeSettings(args.attributes))
            render = (settings.cohort_render if args.render_images is None
                      else args.render_images)
            identity = {"folder": str(folder.resolve()), **job.to_dict(), "render": render}
            spec = CohortSpec(cohort_id=args.cohort_id or _cohort_id(identity), job=job,
                              threshold=model_set.classifier.threshold, render=render)
            store = LocalStore(out)
            ledger = CohortLedger(store, spec.cohort_id)
            runner = CohortRunner(store, ledger, lambda name: folder / name, lambda: backend)
            print(f"cohort {spec.cohort_id}: {len(images)} images in {folder}, target "
                  f"{job.target}", file=sys.stderr, flush=True)
            _probe(backend, store, job)
            with _progress_bar(len(images)) as on_image:
                summary = runner.run(spec, images, on_image, chunk_size=args.chunk_size)
        finally:
            backend.close()
    _print_summary(summary, store)


def _draw(args: argparse.Namespace) -> None:
    from styleprobe.explain.engine import check_job_id, render_on_demand
    from styleprobe.explain.spec import JobSpecError
    from styleprobe.storage import ObjectNotFound
    from styleprobe.storage.local import LocalStore

    store = LocalStore(Path(args.out or settings_from_args(args).store_dir))
    with user_errors():
        for job_id in args.image_job_ids:
            try:
                check_job_id(job_id)
                result = render_on_demand(store, job_id)
            except (JobSpecError, ObjectNotFound):
                raise UserError(f"no finished image {job_id!r} in {store.root} (the "
                                "summary's job_id column names them)") from None
            print(f"{job_id}: {store.path(result.outputs['report'])}")


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


def _probe(backend: ModelBackend, store: LocalStore, job: JobSpec) -> None:
    """Probe the cohort's direction before the first image (stored: the runner finds it),
    with its progress: the longest wait before any image is explained."""
    from styleprobe.explain.direction import ensure_direction
    from styleprobe.training.progress import Progress

    with Progress(100, f"direction probe ({job.probe.samples} samples)", unit="%") as bar:
        ensure_direction(backend, store, job.target, job.probe, job.orthogonalize,
                         lambda _stage, fraction: bar.update(round(100 * fraction) - bar.done))


@contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[ImageRow, bool], None]]:
    """A per-image progress callback with done/failed/skipped counts: a bar on a terminal,
    plain lines in a log file."""
    from styleprobe.training.progress import Progress

    counts = {"done": 0, "failed": 0, "skipped": 0}
    with Progress(total, "images", unit="image") as bar:

        def update(row: ImageRow, skipped: bool) -> None:
            counts["skipped" if skipped else row.status] += 1
            bar.update(1, **counts)

        yield update


# --- through the service ---------------------------------------------------------------------

CALL_TIMEOUT_S = 60.0  # a unary call (submit, get) without --timeout


def _read_keys(path: Path) -> list[str]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        raise UserError(f"{path} lists no object key")
    return keys


def _submit_request(args: argparse.Namespace) -> pb.SubmitCohortRequest:
    from styleprobe.api import pb

    given = [name for name, value in (("--prefix", args.prefix), ("--keys-file", args.keys_file),
                                      ("IMAGES", args.images)) if value]
    if len(given) != 1:
        raise UserError("name the images one way: --prefix, --keys-file or IMAGES"
                        + (f" (got {', '.join(given)})" if given else ""))
    request = pb.SubmitCohortRequest(
        model_set=args.model_set, target=args.target, lambdas=args.lambdas,
        options=pb.ExplainOptions(
            orthogonalize=names(args.orthogonalize),
            probe=pb.ProbeOptions(samples=args.probe_samples, seed=args.probe_seed)))
    if args.attributes:
        request.attributes.top = args.attributes
    if args.render_images is not None:
        request.render_images = args.render_images
    if args.prefix:
        request.prefix = args.prefix
    elif args.keys_file:
        request.keys.keys.extend(_read_keys(args.keys_file))
    else:
        for path in args.images:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise UserError(f"cannot read {path}: {exc.strerror}") from exc
            request.inline.images.add(data=data, filename=path.name)
    return request


def _submit(args: argparse.Namespace) -> None:
    request = _submit_request(args)
    with service(args) as (stub, metadata):
        job = stub.SubmitCohort(request, metadata=metadata,
                                timeout=args.timeout or CALL_TIMEOUT_S)
    print(f"cohort {job.job_id} queued: {job.counts.total} images, model set {job.model_set}, "
          f"target {job.target}, λ {job.lambdas}", file=sys.stderr)
    print(job.job_id)
    if args.watch:
        args.job_id = job.job_id
        _watch(args)


def _resume(args: argparse.Namespace) -> None:
    from styleprobe.api import pb

    with service(args) as (stub, metadata):
        job = stub.ResumeCohort(pb.ResumeCohortRequest(job_id=args.job_id),
                                metadata=metadata, timeout=args.timeout or CALL_TIMEOUT_S)
    print(f"cohort {job.job_id} resumed: {job.counts.total} images, those finished before "
          "are kept and skipped", file=sys.stderr)
    print(job.job_id)
    if args.watch:
        _watch(args)


def _watch(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    job = None
    with (service(args) as (stub, metadata),
          tqdm(unit="image", disable=not sys.stderr.isatty(), dynamic_ncols=True) as bar):
        for event in watch_job(stub, metadata, args.job_id, args.timeout):
            job = event.job
            _show_progress(bar, job)
    if job is None:  # pragma: no cover (the service always sends the current state)
        raise UserError(f"no progress received for job {args.job_id}")
    _print_cohort(job)


def _show_progress(bar: tqdm, job: pb.Job) -> None:
    counts = job.counts
    bar.total = counts.total
    bar.n = counts.done + counts.failed
    bar.set_postfix({"done": counts.done, "failed": counts.failed,
                     "left_s": round(job.seconds_left)}, refresh=False)
    bar.set_description_str(job.stage or "queued")
    bar.refresh()


def _print_cohort(job: pb.Job) -> None:
    from styleprobe.api import pb

    state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    counts = job.counts
    print(f"cohort {job.job_id} {state}: {counts.total} images, {counts.done} explained, "
          f"{counts.failed} failed, {counts.pending} not done")
    if job.HasField("cohort"):
        print(f"unreliable reconstructions: {job.cohort.unreliable} of {counts.done}; "
              f"prediction flips within the grid: {job.cohort.flipped} of {counts.done}")
    if job.state != pb.JOB_STATE_SUCCEEDED:
        raise UserError(f"cohort {job.job_id} {state}" + (f": {job.error}" if job.error else ""))


def _download(args: argparse.Namespace) -> None:
    from styleprobe.api import pb

    with service(args) as (stub, metadata):
        job = stub.GetJob(pb.GetJobRequest(job_id=args.job_id), metadata=metadata,
                          timeout=args.timeout or CALL_TIMEOUT_S)
    if job.kind != "cohort":
        raise UserError(f"job {job.job_id} is a {job.kind} job, not a cohort")
    if not job.HasField("cohort"):
        state = pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        raise UserError(f"cohort {job.job_id} is {state}: its summary is written when it "
                        "ends (styleprobe cohort watch waits for that)")
    args.out.mkdir(parents=True, exist_ok=True)
    for artifact in job.cohort.artifacts:
        if not artifact.url:
            raise UserError(f"the service gave no URL for {artifact.key} (its store is not S3)")
        target = args.out / Path(artifact.key).name
        try:
            target.write_bytes(download(artifact.url, args, CALL_TIMEOUT_S))
        except (urllib.error.URLError, OSError) as exc:
            raise UserError(f"cannot download {artifact.key}: {exc}") from exc
        print(f"{artifact.name}: {target}")
