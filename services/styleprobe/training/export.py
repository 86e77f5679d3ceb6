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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from styleprobe.models.stylegan2 import Generator, GeneratorConfig
from styleprobe.modelset import (
    MODEL_KINDS,
    ClassifierInfo,
    ModelEntry,
    ModelSet,
    Preprocessing,
    QualityGate,
    StyleLayer,
    TensorSpec,
    load_model_set,
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


class StylesModule(nn.Module):
    """Exported StyleSpace coordinates: w [N, w_dim] -> styles [N, S], every layer's
    per-channel modulation (see ``SynthesisNetwork.styles``)."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.affines = nn.ModuleList(layer.affine for block in G.synthesis.style_blocks()
                                     for _, layer, _ in block.style_layers())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # the exported synthesis gives every layer the same w
        return torch.cat([affine(w) for affine in self.affines], dim=1)


class StyleSynthesisModule(nn.Module):
    """Exported synthesis from StyleSpace: styles [N, S] -> image [N, C, R, R] in [-1, 1],
    constant noise; ``stylesynthesis(styles(w)) == synthesis(w)``."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.synthesis = G.synthesis

    def forward(self, styles: torch.Tensor) -> torch.Tensor:
        return self.synthesis.synthesize(styles, noise_mode="const").clamp(-1.0, 1.0)


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
        **stylespace_signatures(G),
        "encoder": (encoder, torch.rand(4, *image_dims) * 2 - 1, [image],
                    [TensorSpec("w", [cfg.w_dim])]),
        "classifier": (classifier, torch.rand(4, *image_dims) * 2 - 1, [image],
                       [TensorSpec("logits", [len(class_names)])]),
    }
    entries, parity = _export_models(name, version, repository, signatures)

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
        style_layers=style_layers(G),
    )
    write_production_configs(repository, model_set)
    write_manifest(model_set, repository)
    return ExportResult(model_set, parity)


Signature = tuple[nn.Module, torch.Tensor, list[TensorSpec], list[TensorSpec]]


def _export_models(name: str, version: int, repository: Path,
                   signatures: dict[str, Signature]
                   ) -> tuple[dict[str, ModelEntry], dict[str, float]]:
    """Trace, check and write each model; their manifest entries and parity."""
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
    return entries, parity


def style_layers(G: Generator) -> list[StyleLayer]:
    """The generator's StyleSpace layout, as the manifest records it."""
    return [StyleLayer(name, channels) for name, channels in G.synthesis.style_layout()]


def stylespace_signatures(G: Generator) -> dict[str, Signature]:
    """The StyleSpace entry points of ``G``: ``styles`` (w -> styles) and
    ``stylesynthesis`` (styles -> image), with example inputs and tensor specs."""
    cfg = G.cfg
    w = torch.randn(4, cfg.w_dim) * 0.5 + G.mapping.w_avg
    with torch.no_grad():
        example_styles = StylesModule(G).eval()(w)
    width = int(example_styles.shape[1])
    image = TensorSpec("image", [cfg.channels, cfg.resolution, cfg.resolution])
    return {
        "styles": (StylesModule(G), w, [TensorSpec("w", [cfg.w_dim])],
                   [TensorSpec("styles", [width])]),
        "stylesynthesis": (StyleSynthesisModule(G), example_styles,
                           [TensorSpec("styles", [width])], [image]),
    }


def add_stylespace(repository: Path, name: str) -> ExportResult:
    """Export the StyleSpace entry points of an exported set ``name`` from its own
    ``mapping`` and ``synthesis`` files (no retraining; those files are not rewritten) and
    rewrite its manifest with them. A set whose synthesis belongs to another set (one made
    by ``model-set add-classifier``) shares that set's entry points once it has them."""
    repository = Path(repository)
    model_set = load_model_set(repository, name, verify=True)
    files = {}
    for kind in ("mapping", "synthesis"):
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
            warnings.simplefilter("ignore", DeprecationWarning)
            files[kind] = torch.jit.load(str(repository / model_set.models[kind].path),
                                         map_location="cpu")
    G = Generator(GeneratorConfig(**model_set.training["generator"]["config"]))
    G.load_state_dict({**files["mapping"].state_dict(), **files["synthesis"].state_dict()})
    G.eval().requires_grad_(False)
    w = G.mapping(torch.randn(3, model_set.z_dim, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        diff = (files["synthesis"](w) - StyleSynthesisModule(G)(StylesModule(G)(w))
                ).abs().max().item()
    if diff >= PARITY_TOLERANCE:
        raise RuntimeError(f"the rebuilt generator differs from {name}'s synthesis by {diff:.2e}")
    owner = model_set.models["synthesis"].triton_name.removesuffix("-synthesis")
    entries, parity = _export_models(owner, model_set.models["synthesis"].version, repository,
                                     stylespace_signatures(G))
    updated = replace(model_set, models={**model_set.models, **entries},
                      style_layers=style_layers(G))
    write_production_configs(repository, updated)
    write_manifest(updated, repository)
    return ExportResult(updated, parity)


def write_manifest(model_set: ModelSet, repository: Path) -> Path:
    """Write the manifest atomically."""
    path = manifest_path(repository, model_set.name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(model_set.to_json() + "\n")
    os.replace(tmp, path)
    return path
