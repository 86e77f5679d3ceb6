"""``styleprobe client explain``: explain an image through a running service (gRPC) and
save what it made (``--attributes N``: with its attributes, FindAttributes);
``client fetch|delete`` (:mod:`.job_data`): a job's stored data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from styleprobe.cli import job_data
from styleprobe.cli.common import UserError
from styleprobe.cli.remote import add_server_arguments, download

DOWNLOADS = ("manifest", "animation", "strip", "report")  # what the client saves


def register(sub: argparse._SubParsersAction) -> None:
    client = sub.add_parser("client", help="call a running service")
    calls = client.add_subparsers(dest="call", required=True)
    explain = calls.add_parser("explain", help="explain an image through the service")
    explain.add_argument("image", type=Path)
    add_server_arguments(explain)
    explain.add_argument("--model-set", required=True)
    explain.add_argument("--target", default="")
    explain.add_argument("--lambdas", default="")
    explain.add_argument("--out", type=Path, default=Path("."),
                         help="folder for the manifest, animation, strip and report")
    explain.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    explain.add_argument("--attributes", type=int, default=0,
                         help="also find this many StyleSpace attributes (FindAttributes); "
                              "their strips are saved too (default 0: none)")
    explain.set_defaults(func=_explain)
    job_data.register_calls(calls)  # fetch, delete


def _explain(args: argparse.Namespace) -> None:
    from styleprobe.api import pb
    from styleprobe.cli.remote import service, watch_job

    try:
        data = args.image.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {args.image}: {exc.strerror}") from exc
    request = pb.ExplainRequest(image_bytes=data, filename=args.image.name,
                                model_set=args.model_set, target=args.target,
                                lambdas=args.lambdas)
    with service(args) as (stub, metadata):
        if args.attributes:
            job = stub.FindAttributes(pb.FindAttributesRequest(
                explain=request, attributes=pb.AttributeOptions(top=args.attributes)),
                metadata=metadata, timeout=60)
        else:
            job = stub.Explain(request, metadata=metadata, timeout=60)
        print(f"job {job.job_id} queued")
        for event in watch_job(stub, metadata, job.job_id, args.timeout):
            print(f"{event.job.progress:5.0%} {event.message}", file=sys.stderr)
            job = event.job
    if job.state != pb.JOB_STATE_SUCCEEDED:
        raise UserError(f"job {job.job_id} {pb.JobState.Name(job.state)}: {job.error}")
    args.out.mkdir(parents=True, exist_ok=True)
    strips = {a.strip_artifact for a in job.explanation.attributes}
    for a in job.explanation.attributes:
        flip = f"flips at λ = {a.flip_lambda:+.2f}" if a.flips else "no flip"
        print(f"attribute {a.rank}: {a.name}, effect {a.effect:+.3f}, {flip}")
    for artifact in job.explanation.artifacts:
        if (artifact.name in DOWNLOADS or artifact.name in strips) and artifact.url:
            target = args.out / Path(artifact.key).name
            target.write_bytes(download(artifact.url, args, 60.0))
            print(f"saved {target}")
