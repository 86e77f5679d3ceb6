"""A classifier brought by its user: read it from a file and check the model contract.

Two kinds of file are read: TorchScript (what any PyTorch model exports with
``torch.jit.script`` / ``torch.jit.trace``, and what Triton serves) and StyleProbe's own
classifier checkpoint (``styleprobe train classifier``). :func:`check_contract` then
checks what every explanation relies on, before anything is written, in eval mode (as
every backend runs it): images ``[N, C, R, R]`` in ``[-1, 1]`` of the generator's size are
accepted, the logits are finite and ``[N, K]`` with K the number of class names, two calls
on the same batch give the same answer, and a batch of 7 gives the same answer as the
same images one by one (within :data:`BATCH_TOLERANCE`). Every failure is a
:class:`ClassifierFileError` with a one-line message.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from styleprobe.training.checkpoint import CheckpointError

BATCH_TOLERANCE = 1e-4
CHECK_BATCH = 7
CHECK_SEED = 1234


class ClassifierFileError(ValueError):
    """A classifier file cannot be read or breaks the model contract; the message says how."""


@dataclass
class ClassifierFile:
    """A classifier module read from ``path``; ``class_names`` when the file says them."""

    path: Path
    module: nn.Module
    kind: str  # "torchscript" or "checkpoint"
    class_names: list[str] | None = None
    training: dict[str, Any] = field(default_factory=dict)  # a checkpoint's record


def read_classifier(path: Path) -> ClassifierFile:
    """The classifier in ``path``: TorchScript, or a StyleProbe classifier checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierFileError(f"{path} does not exist or is not a file")
    try:
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return ClassifierFile(path, module.eval(), "torchscript")
    except (RuntimeError, ValueError) as scripted_error:
        from styleprobe.training.classifier import load_classifier

        try:
            model, state = load_classifier(path)
        except CheckpointError as exc:
            raise ClassifierFileError(
                f"{path} is neither a TorchScript classifier "
                f"({_reason(scripted_error)}) nor a StyleProbe classifier checkpoint "
                f"({exc})") from exc
        record = {key: state[key] for key in ("config", "train_config", "metrics")
                  if key in state}
        return ClassifierFile(path, model.eval(), "checkpoint", list(state["class_names"]),
                              record)


def check_contract(module: nn.Module, channels: int, resolution: int,
                   class_names: list[str]) -> None:
    """Raise :class:`ClassifierFileError` unless ``module`` keeps the classifier contract
    for images ``[N, channels, resolution, resolution]`` and ``class_names``."""
    shape = [channels, resolution, resolution]
    images = torch.rand(CHECK_BATCH, *shape, generator=torch.Generator().manual_seed(
        CHECK_SEED)) * 2 - 1
    batched = _logits(module, images, shape)
    if batched.ndim != 2 or batched.shape[0] != CHECK_BATCH:
        raise ClassifierFileError(f"the classifier returns {list(batched.shape)} for "
                                  f"{CHECK_BATCH} images; expected logits [N, K]")
    if batched.shape[1] != len(class_names):
        raise ClassifierFileError(
            f"the classifier returns {batched.shape[1]} logits, but {len(class_names)} class "
            f"names were given ({', '.join(class_names)})")
    if not torch.isfinite(batched).all():
        raise ClassifierFileError("the classifier returns non-finite logits (NaN or inf)")
    again = (_logits(module, images, shape) - batched).abs().max().item()
    if again > 0.0:
        raise ClassifierFileError(
            f"the classifier answers the same batch differently twice (max difference "
            f"{again:.2e}): it is not deterministic in eval mode (random noise in forward?)")
    one_by_one = torch.cat([_logits(module, image[None], shape) for image in images])
    gap = (batched - one_by_one).abs().max().item()
    if gap > BATCH_TOLERANCE:
        raise ClassifierFileError(
            f"the classifier answers a batch of {CHECK_BATCH} differently from the same "
            f"images one by one (max difference {gap:.2e} > {BATCH_TOLERANCE:g}): batch "
            "statistics (BatchNorm in training mode?) make it depend on its neighbours")

def _logits(module: nn.Module, images: torch.Tensor, shape: list[int]) -> torch.Tensor:
    try:
        with torch.inference_mode():
            out = module(images)
    except Exception as exc:  # a scripted module raises its own error types
        raise ClassifierFileError(
            f"the classifier does not take images [N, {', '.join(map(str, shape))}] (the "
            f"generator's): {_reason(exc)}") from exc
    if not isinstance(out, torch.Tensor):
        raise ClassifierFileError(f"the classifier returns {type(out).__name__}, expected one "
                                  "tensor of logits [N, K]")
    return out.float()


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
