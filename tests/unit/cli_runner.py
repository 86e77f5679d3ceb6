"""The ``cli`` fixture's type: ``cli(*args)`` runs ``styleprobe ARGS`` in process and
returns (exit code, stdout, stderr)."""

from __future__ import annotations

from collections.abc import Callable

Cli = Callable[..., tuple[int, str, str]]
