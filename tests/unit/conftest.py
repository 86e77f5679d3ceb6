"""Fixtures of the unit tests."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import Cli

from styleprobe.cli import run


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """Run ``styleprobe ARGS`` in process (one torch thread); (exit code, stdout, stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def call(*args: str | Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = run(["--threads", "1", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    yield call
    root.handlers[:], root.level = handlers, level  # the CLI installs its own log handler
