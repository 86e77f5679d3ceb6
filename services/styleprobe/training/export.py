"""TorchScript export of a model set into Triton's repository layout, with its manifest.

Each model is traced, checked against the eager module (max abs difference must stay
below :data:`PARITY_TOLERANCE`) at two batch sizes, and written to
``<repository>/<set>-<model>/<version>/model.pt``, with Triton's ``config.pbtxt`` files
(:mod:`styleprobe.serving.triton_config`); the manifest
``<repository>/<set>.modelset.json`` is written last.

The training runs' ``run.json`` records (:mod:`styleprobe.training.runrecord`) are read into
the manifest's ``training`` (:func:`run_summary`), and the generator's class balance is
compared with the data's (:func:`balance_findings`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from styleprobe.models.stylegan2 import Generator
from styleprobe.modelset import (
    MODEL_KINDS,
    ClassifierInfo,
    ModelEntry,
    ModelSet,
    Preprocessing,
    QualityGate,
    TensorSpec,
    manifest_path,
    sha256_file,
)
from styleprobe.serving.triton_config import write_production_configs
from styleprobe.training.runrecord import RUN_FILE

PARITY_TOLERANCE = 1e-5
BALANCE_MARGIN = 0.15  # generated vs data share of a class, absolute, beyond which to warn
RUN_FIELDS = ("kind", "command", "data", "versions", "started_at", "ended_at", "step",
              "status", "metrics")
log = logging.getLogger(__name__)


class MappingModule(nn.Module):
    """Exported mapping: z [N, z_dim] -> w [N, w_dim] (no truncation; see manifest w_avg)."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.mapping = G.mapping

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mapping(z)


class SynthesisModule(nn.Module):
    """Exported synthesis: w [N, w_dim] -> image [N, C, R, R] in [-1, 1], constant noise."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.synthesis, self.num_ws = G.synthesis, G.cfg.num_ws

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        return self.synthesis(ws, noise_mode="const").clamp(-1.0, 1.0)


@dataclass
class ExportResult:
    model_set: ModelSet
    parity: dict[str, float]


def trace_and_check(module: nn.Module,
                    example: torch.Tensor) -> tuple[torch.jit.ScriptModule, float]:
    """Trace ``module`` and return it with its max abs difference from eager."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of torch 2.13
        traced = torch.jit.trace(module, example, check_trace=False)
        diff = 0.0
        for n in (1, example.shape[0] + 3):
            probe = torch.randn(n, *example.shape[1:], generator=torch.Generator().manual_seed(n))
            diff = max(diff, (traced(probe) - module(probe)).abs().max().item())
    return traced, diff


def run_summary(checkpoint: Path) -> dict[str, Any] | None:
    """What the card needs of the ``run.json`` beside ``checkpoint`` (None without one):
    command, data fingerprint, versions, times, steps, status and final metrics."""
    path = Path(checkpoint).parent / RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    summary = {key: record[key] for key in RUN_FIELDS if key in record}
    summary["sessions"] = len(record.get("sessions", []))
    return summary


def version_exists(repository: Path, name: str, version: int) -> bool:
    """Whether any model of set ``name`` already has ``version`` in ``repository``."""
    return any((Path(repository) / f"{name}-{kind}" / str(version)).exists()
               for kind in MODEL_KINDS)


def balance_findings(generated: dict[str, float], data: dict[str, float], samples: int,
                     margin: float = BALANCE_MARGIN) -> list[str]:
    """A warning for every class whose share of ``samples`` generated images (as the
    classifier calls them) differs from its share of the data by more than ``margin``."""
    return [f"the generator draws {name!r} on {share:.0%} of {samples} samples against "
            f"{data[name]:.0%} of the data (more than {margin:.2f} apart): explanations "
            "toward it rest on a generator that under- or over-produces it"
            for name, share in generated.items()
            if name in data and abs(share - data[name]) > margin]


def _save_scripted(traced: torch.jit.ScriptModule, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    traced.save(str(tmp))
    os.replace(tmp, path)


def export_model_set(
    name: str,
    G: Generator,
    encoder: nn.Module,
    classifier: nn.Module,
    class_names: list[str],
    default_target: str,
    repository: Path,
    description: str,
    max_pixel_mse: float,
    version: int = 1,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    nuisance_directions: dict[str, list[float]] | None = None,
) -> ExportResult:
    """Export the four models and write the manifest (last); raise if parity fails."""
    cfg = G.cfg
    image_dims = [cfg.channels, cfg.resolution, cfg.resolution]
    image = TensorSpec("image", image_dims)
    signatures = {
        "mapping": (MappingModule(G), torch.randn(4, cfg.z_dim),
                    [TensorSpec("z", [cfg.z_dim])], [TensorSpec("w", [cfg.w_dim])]),
        "synthesis": (SynthesisModule(G), torch.randn(4, cfg.w_dim) * 0.5 + G.mapping.w_avg,
                      [TensorSpec("w", [cfg.w_dim])], [image]),
        "encoder": (encoder, torch.rand(4, *image_dims) * 2 - 1, [image],
                    [TensorSpec("w", [cfg.w_dim])]),
        "classifier": (classifier, torch.rand(4, *image_dims) * 2 - 1, [image],
                       [TensorSpec("logits", [len(class_names)])]),
    }
    entries, parity = {}, {}
    for kind, (module, example, inputs, outputs) in signatures.items():
        traced, diff = trace_and_check(module, example)
        parity[kind] = diff
        log.info("exported %s: max abs difference from eager %.2e", kind, diff)
        if diff >= PARITY_TOLERANCE:
            raise RuntimeError(f"TorchScript {kind} differs from eager by {diff:.2e}")
        triton_name = f"{name}-{kind}"
        path = Path(repository) / triton_name / str(version) / "model.pt"
        _save_scripted(traced, path)
        entries[kind] = ModelEntry(triton_name, version, sha256_file(path), inputs, outputs)

    model_set = ModelSet(
        name=name, description=description,
        preprocessing=Preprocessing(resolution=cfg.resolution, channels=cfg.channels),
        classifier=ClassifierInfo(class_names=list(class_names)),
        models=entries, z_dim=cfg.z_dim, w_dim=cfg.w_dim,
        w_avg=[float(x) for x in G.mapping.w_avg],
        quality=QualityGate(max_pixel_mse=max_pixel_mse),
        default_target=default_target,
        nuisance_directions=nuisance_directions or {},
        training=training or {}, metrics=metrics or {},
    )
    write_production_configs(repository, model_set)
    write_manifest(model_set, repository)
    return ExportResult(model_set, parity)


def write_manifest(model_set: ModelSet, repository: Path) -> Path:
    """Write the manifest atomically."""
    path = manifest_path(repository, model_set.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(model_set.to_json() + "\n")
    os.replace(tmp, path)
    return path
