"""``run.json``: what a training run folder records beside its checkpoint, written at each
checkpoint and at the end: the exact command and options of every session (a resumed run
has several), versions, the data's fingerprint, times, steps, status and final metrics."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def command_line() -> str:
    """The ``styleprobe`` command this process runs, as typed after the program's name."""
    return shlex.join(["styleprobe", *sys.argv[1:]])


def versions() -> dict[str, str]:
    """Versions of StyleProbe, torch, numpy and Python."""
    import numpy as np
    import torch

    try:
        styleprobe = metadata.version("styleprobe")
    except metadata.PackageNotFoundError:
        styleprobe = "unknown"
    return {"styleprobe": styleprobe, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


class RunRecord:
    """``out/run.json`` of one kind of training run (``gan``, ``encoder``, ``classifier``);
    a session of a resumed run is appended to the record already there."""

    def __init__(self, out: Path, kind: str, options: dict[str, Any], data: dict[str, Any],
                 from_step: int = 0) -> None:
        self.path = out / RUN_FILE
        old = json.loads(self.path.read_text()) if self.path.is_file() and from_step else {}
        started, command = now(), command_line()
        self.record: dict[str, Any] = {
            "kind": kind, "command": command,
            "options": options, "versions": versions(), "data": data,
            "started_at": old.get("started_at", started), "ended_at": None,
            "status": "running", "step": from_step, "metrics": {},
            "sessions": [*old.get("sessions", []), {
                "command": command, "started_at": started, "ended_at": None,
                "from_step": from_step, "to_step": from_step, "status": "running"}],
        }

    def update(self, step: int, status: str = "running",
               metrics: dict[str, float] | None = None) -> None:
        """Record progress (``running``) or the end (``finished``, ``interrupted``)."""
        session = self.record["sessions"][-1]
        session.update(to_step=step, status=status, updated_at=now())
        self.record.update(step=step, status=status, updated_at=session["updated_at"])
        if status != "running":
            session["ended_at"] = self.record["ended_at"] = session["updated_at"]
        if metrics is not None:
            self.record["metrics"] = metrics
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record, indent=2, default=str) + "\n")
        os.replace(tmp, self.path)
