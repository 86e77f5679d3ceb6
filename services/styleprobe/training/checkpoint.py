"""Resumable checkpoints (atomic writes), stopping on a signal with a checkpoint saved,
and the image tensor convention."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, kind: str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check its kind."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from exc
    if state.get("kind") != kind:
        raise CheckpointError(f"{path} is a {state.get('kind')!r} checkpoint, expected {kind!r}")
    return state


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Images (N, H, W, C) in [0, 1] -> tensor (N, C, H, W) in [-1, 1]."""
    assert images.ndim == 4, f"images must be (N, H, W, C), got {images.shape}"
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))) * 2.0 - 1.0


def to_images(tensor: torch.Tensor) -> np.ndarray:
    """Tensor (N, C, H, W) in [-1, 1] -> images (N, H, W, C) in [0, 1], clipped."""
    return ((tensor.detach().cpu().clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()


class TrainingInterruptedError(Exception):
    """Training stopped on SIGINT or SIGTERM after its checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}; "
                         f"checkpoint saved to {checkpoint}")

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process that a signal ended."""
        return 128 + self.signum


@dataclass
class StopRequest:
    """The signal that asked training to stop, once one has (None before)."""

    signum: int | None = None

    def check(self, step: int, save: Callable[[], Path]) -> None:
        """After a step: when a stop was asked, save and raise TrainingInterruptedError."""
        if self.signum is not None:
            raise TrainingInterruptedError(self.signum, step, save())


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM ask the training loop to stop after the current step (a second
    signal ends the process at once); the previous handlers come back afterwards. Outside
    the main thread no handler can be set, and the request is never made."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        request.signum = signum
        print(f"styleprobe: {signal.Signals(signum).name}: finishing this step and saving "
              "(send it again to stop at once)", file=sys.stderr, flush=True)
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
