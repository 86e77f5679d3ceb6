"""A new model set from a classifier of one's own and an existing set's generator and encoder.

:func:`add_classifier` checks the classifier's contract against the base set's images
(:mod:`styleprobe.training.classifier_file`) before anything is written, then measures
what can be measured: on generated samples, the share called each class (the generator's
*coverage* of the classifier's classes; a class drawn on fewer than
:data:`MIN_CLASS_SHARE` of them is a finding: no explanation can show it); on a labelled
held-out folder, if given, the classifier's AUC, its agreement on reconstructions and the
share of images the quality gate flags. It then writes the new set into the repository:
the classifier as ``<name>-classifier/1/model.pt`` with its Triton config, the decode
ensemble ``<name>-decode``, and the manifest last, which refers to the base set's
mapping, synthesis and encoder (no copies) and records the measurements.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from styleprobe.backends.local import LocalBackend
from styleprobe.data.datasets import load_folder
from styleprobe.explain.direction import generator_finding
from styleprobe.explain.inputs import from_model_layout, to_model_layout
from styleprobe.explain.quality import assess_reconstruction
from styleprobe.explain.scores import target_probability
from styleprobe.modelset import (
    COVERAGE_SAMPLES,
    ClassifierInfo,
    ModelEntry,
    ModelSet,
    ModelSetError,
    TensorSpec,
    load_model_set,
    manifest_path,
    sha256_file,
)
from styleprobe.serving.triton_config import write_production_configs
from styleprobe.training.classifier_file import ClassifierFile, check_contract
from styleprobe.training.export import PARITY_TOLERANCE, trace_and_check, write_manifest

MIN_CLASS_SHARE = 0.01  # a class drawn on fewer generated samples is a finding
COVERAGE_SEED = 2024
CHUNK = 256


@dataclass
class AddedModelSet:
    """The new set as written, and the findings about its pair of models."""

    model_set: ModelSet
    findings: list[str] = field(default_factory=list)


def classifier_model_set(base: ModelSet, name: str, classifier: ClassifierFile,
                         class_names: list[str], target: str) -> ModelSet:
    """The manifest of a set that is ``base`` with ``classifier`` (checked against ``base``'s
    images first); its classifier entry is ``<name>-classifier`` version 1."""
    if name == base.name:
        raise ModelSetError(f"the new set needs a name of its own, not {base.name!r}")
    if len(set(class_names)) != len(class_names) or len(class_names) < 2:
        raise ModelSetError(f"class names must be 2 or more different names, got "
                            f"{', '.join(class_names)}")
    prep = base.preprocessing
    check_contract(classifier.module, prep.channels, prep.resolution, class_names)
    entry = ModelEntry(triton_name=f"{name}-classifier", version=1,
                       sha256=sha256_file(classifier.path) if classifier.kind == "torchscript"
                       else "",
                       inputs=[TensorSpec("image", list(base.image_shape))],
                       outputs=[TensorSpec("logits", [len(class_names)])])
    model_set = replace(
        base, name=name, description=f"{base.name}'s generator and encoder with the "
                                     f"classifier {classifier.path.name}",
        classifier=ClassifierInfo(class_names=list(class_names)),
        models={**base.models, "classifier": entry}, default_target=target,
        training={"base_model_set": base.name, "classifier_file": classifier.path.name,
                  "classifier_kind": classifier.kind},
        metrics={})
    model_set.classifier.class_index(target)
    return model_set


def generator_coverage(generate: Callable[[np.ndarray], np.ndarray], z_dim: int,
                       classifier: torch.nn.Module, class_names: list[str],
                       samples: int = COVERAGE_SAMPLES,
                       seed: int = COVERAGE_SEED) -> dict[str, float]:
    """The share of ``samples`` images ``generate(z)`` draws (``z [N, z_dim]`` standard
    normal -> images ``[N, C, R, R]`` in [-1, 1]) that ``classifier`` calls each class."""
    z = np.random.default_rng(seed).standard_normal((samples, z_dim)).astype(np.float32)
    calls = np.concatenate([np.argmax(_logits(classifier, generate(z[i:i + CHUNK])), axis=1)
                            for i in range(0, samples, CHUNK)])
    return {name: float(np.mean(calls == k)) for k, name in enumerate(class_names)}


def coverage_findings(coverage: dict[str, float], samples: int) -> list[str]:
    """A finding for every class drawn on fewer than :data:`MIN_CLASS_SHARE` of samples."""
    return [generator_finding(f"what this classifier calls {name!r}", round(share * samples),
                              samples)
            for name, share in coverage.items() if share < MIN_CLASS_SHARE]


def held_out_metrics(backend: LocalBackend, classifier: torch.nn.Module, folder: Path,
                     model_set: ModelSet) -> dict[str, Any]:
    """On a labelled folder: the classifier's AUC for the default target, its agreement on
    reconstructions ``G(E(x))`` and the share of images the quality gate flags."""
    prep, info = model_set.preprocessing, model_set.classifier
    data = load_folder(folder, prep.resolution, prep.channels)
    if data.labels is None:
        raise ModelSetError(f"{folder} has no labels (factors.csv with file and label columns)")
    if data.labels.min() < 0 or data.labels.max() >= len(info.class_names):
        raise ModelSetError(f"{folder}: labels must lie in 0..{len(info.class_names) - 1} "
                            f"({', '.join(info.class_names)})")
    x = to_model_layout(data.images, prep)
    target = info.class_index(model_set.default_target)
    reconstructions = np.concatenate([backend.synthesis(backend.encoder(x[i:i + CHUNK]))
                                      for i in range(0, len(x), CHUNK)])
    logits_input = _logits(classifier, x)
    logits_rec = _logits(classifier, reconstructions)
    p_input = target_probability(logits_input, target)
    p_rec = target_probability(logits_rec, target)
    images = from_model_layout(reconstructions, prep)
    flagged = [assess_reconstruction(image, rec, float(pi), float(pr), info.threshold,
                                     model_set.quality).unreliable
               for image, rec, pi, pr in zip(data.images, images, p_input, p_rec, strict=True)]
    is_target = data.labels == target
    auc = (float(roc_auc_score(is_target, p_input))
           if 0 < is_target.sum() < len(is_target) else None)
    return {"held_out_images": len(data), "classifier_auc": auc,
            "agreement_on_reconstructions": float(np.mean(
                logits_input.argmax(1) == logits_rec.argmax(1))),
            "quality_gate_flagged_share": float(np.mean(flagged))}


def add_classifier(repository: Path, base_name: str, classifier: ClassifierFile, name: str,
                   class_names: list[str], target: str, held_out: Path | None = None,
                   samples: int = COVERAGE_SAMPLES, force: bool = False) -> AddedModelSet:
    """Check, measure and write the set ``name`` (see the module's docstring)."""
    repository = Path(repository)
    if manifest_path(repository, name).exists() and not force:
        raise ModelSetError(f"model set {name!r} exists in {repository} (--force replaces it)")
    base = load_model_set(repository, base_name, verify=True)
    model_set = classifier_model_set(base, name, classifier, class_names, target)
    backend = LocalBackend(repository, base_name)
    try:
        coverage = generator_coverage(lambda z: backend.synthesis(backend.mapping(z)),
                                      base.z_dim, classifier.module, class_names, samples)
        metrics: dict[str, Any] = {"generator_coverage": coverage,
                                   "generator_coverage_samples": samples}
        if held_out is not None:
            metrics.update(held_out_metrics(backend, classifier.module, held_out, model_set))
    finally:
        backend.close()
    findings = coverage_findings(coverage, samples)
    metrics["findings"] = findings
    written = write_classifier(repository, replace(model_set, metrics=metrics), classifier)
    return AddedModelSet(written, findings)


def unregistered_set(repository: Path, base_name: str, classifier: ClassifierFile,
                     class_names: list[str], target: str, scratch: Path) -> ModelSet:
    """The set of ``classifier`` with ``base_name``'s models, written into ``scratch`` (a
    repository of its own whose base models are links into ``repository``): a quick run
    that writes nothing into ``repository``. Same checks as :func:`add_classifier`."""
    base = load_model_set(repository, base_name, verify=True)
    name = f"{base_name}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', classifier.path.stem)}"
    model_set = classifier_model_set(base, name, classifier, class_names, target)
    for entry in base.models.values():
        link = Path(scratch) / entry.triton_name
        if not link.exists():
            link.symlink_to(Path(repository).resolve() / entry.triton_name)
    return write_classifier(scratch, model_set, classifier)


def write_classifier(repository: Path, model_set: ModelSet, classifier: ClassifierFile
                     ) -> ModelSet:
    """Write the set's classifier (TorchScript: the file as it is; a checkpoint: scripted),
    its Triton configs and ensemble, and the manifest last; the manifest as written."""
    entry = model_set.models["classifier"]
    path = Path(repository) / entry.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if classifier.kind == "torchscript":
        shutil.copyfile(classifier.path, tmp)
    else:
        traced, diff = trace_and_check(classifier.module,
                                       torch.rand(4, *model_set.image_shape) * 2 - 1)
        if diff >= PARITY_TOLERANCE:
            raise ModelSetError(f"the traced classifier differs from the checkpoint's by "
                                f"{diff:.2e}")
        traced.save(str(tmp))
    os.replace(tmp, path)
    model_set = replace(model_set, models={
        **model_set.models, "classifier": replace(entry, sha256=sha256_file(path))})
    write_production_configs(repository, model_set)
    write_manifest(model_set, repository)
    return model_set


def _logits(classifier: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([classifier(torch.from_numpy(images[i:i + CHUNK])).float().numpy()
                               for i in range(0, len(images), CHUNK)])

