"""``styleprobe client fetch|delete``: a job's stored data through a running service.

``fetch JOB NAME -o FILE`` streams one artifact (GetArtifact: ``strip``, ``report``,
``manifest``, a cohort's ``csv``, ...) through the API, for machines that cannot reach the
bucket's presigned URLs; the file appears whole or not at all. ``delete JOB`` removes a
job's stored objects and its record (DeleteJob; a running job is cancelled first).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from styleprobe.cli.common import UserError
from styleprobe.cli.remote import add_server_arguments


def register_calls(calls: argparse._SubParsersAction) -> None:
    """Add ``fetch`` and ``delete`` to the ``client`` command's calls."""
    fetch = calls.add_parser("fetch", help="save one artifact of a finished job, streamed "
                                           "through the service (no presigned URL needed)")
    fetch.add_argument("job_id")
    fetch.add_argument("name", help="the artifact's name as GetJob lists it (strip, report, "
                                    "manifest, frame_000, csv, ...) or its file name")
    fetch.add_argument("-o", "--out", type=Path, required=True, help="file to write")
    add_server_arguments(fetch)
    fetch.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    fetch.set_defaults(func=_fetch)

    delete = calls.add_parser("delete", help="remove a job's stored objects and its record "
                                             "(a running job is cancelled first)")
    delete.add_argument("job_id")
    add_server_arguments(delete)
    delete.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    delete.set_defaults(func=_delete)


def _fetch(args: argparse.Namespace) -> None:
    from styleprobe.api import pb
    from styleprobe.cli.remote import service

    out: Path = args.out
    partial = out.with_name(f".{out.name}.part")
    size, content_type, written = 0, "", 0
    try:
        with service(args) as (stub, metadata), partial.open("wb") as fh:
            stream = stub.GetArtifact(pb.GetArtifactRequest(job_id=args.job_id, name=args.name),
                                      metadata=metadata, timeout=args.timeout)
            for index, chunk in enumerate(stream):
                if index == 0:
                    size, content_type = chunk.size, chunk.content_type
                fh.write(chunk.data)
                written += len(chunk.data)
        if written != size:
            raise UserError(f"the service announced {size} bytes and sent {written}; "
                            f"{out} not written")
        os.replace(partial, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror}") from exc
    finally:
        partial.unlink(missing_ok=True)
    print(f"saved {out} ({written} bytes, {content_type})")


def _delete(args: argparse.Namespace) -> None:
    from styleprobe.api import pb
    from styleprobe.cli.remote import service

    with service(args) as (stub, metadata):
        answer = stub.DeleteJob(pb.DeleteJobRequest(job_id=args.job_id), metadata=metadata,
                                timeout=args.timeout)
    print(f"deleted job {answer.job_id}: {answer.objects_deleted} objects")
