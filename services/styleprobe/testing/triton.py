"""``tritonserver`` (from the ``nvidia-pytriton`` wheel) on free ports; a model set to add."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from styleprobe.modelset import ModelSet, load_model_set, manifest_path
from styleprobe.serving.triton_config import write_production_configs
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.ports import free_port


def triton_server(repository: Path, log_path: Path | None = None,
                  source: Path | None = None) -> TritonProcess:
    """A (not yet started) ``tritonserver`` serving ``repository`` on free HTTP, gRPC and
    metrics ports; its output goes to ``log_path`` (``None``: this process's). With
    ``source``, the repository that the CPU ``repository`` was built from, it serves the
    sets added to ``source`` while it runs."""
    return TritonProcess(repository, free_port(), free_port(), free_port(), log_path, source)


def add_classifier_copy(repository: Path, base: str, name: str) -> ModelSet:
    """Add set ``name`` to ``repository``: ``base``'s mapping, synthesis and encoder (the
    same Triton models) with a copy of its classifier as the new model
    ``<name>-classifier``, as ``styleprobe model-set add-classifier`` lays a set out.
    Models and configurations first, the manifest last (what makes the set appear)."""
    model_set = load_model_set(repository, base)
    classifier = model_set.models["classifier"]
    source_file = repository / classifier.path
    model_set = dataclasses.replace(model_set, name=name, models={
        **model_set.models,
        "classifier": dataclasses.replace(classifier, triton_name=f"{name}-classifier")})
    target = repository / model_set.models["classifier"].path
    target.parent.mkdir(parents=True)
    shutil.copyfile(source_file, target)
    write_production_configs(repository, model_set)
    staging = repository / f".{name}.tmp"
    staging.write_text(model_set.to_json())
    staging.replace(manifest_path(repository, name))
    return model_set
