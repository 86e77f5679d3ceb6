"""What every command group shares: the user-error types and the exit code."""

from __future__ import annotations

from styleprobe.data.datasets import DataError
from styleprobe.modelset import ModelSetError
from styleprobe.training.checkpoint import CheckpointError

EXIT_USAGE = 2


class UserError(Exception):
    """An error caused by the user's input: reported as one line, exit code 2."""


USER_ERRORS: tuple[type[Exception], ...] = (UserError, DataError, CheckpointError, ModelSetError)
