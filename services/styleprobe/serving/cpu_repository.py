"""A CPU model repository built from the same TorchScript files as the production one.

The ``tritonserver`` of the ``nvidia-pytriton`` wheel has no ``pytorch_libtorch`` backend,
so each model becomes a Python-backend model (:mod:`styleprobe.serving.python_model`)
that loads the exported ``model.pt`` with ``torch.jit.load``. Model names, versions,
tensor names, batching and the decode ensemble are those of the production
configuration; only the backend, the instance kind (``KIND_CPU``) and the warmup differ.
Each set's manifest is copied in too (last), so the CPU repository lists the same sets.
Sets may share models (a set made by ``styleprobe model-set add-classifier`` refers to its
base set's generator and encoder): a model already there is left as it is.
"""

from __future__ import annotations

import logging
import os
import py_compile
import shutil
from pathlib import Path

from styleprobe.modelset import (
    ModelEntry,
    ModelSetError,
    list_model_sets,
    load_model_set,
    manifest_path,
)
from styleprobe.serving.triton_config import model_config, write_config, write_ensemble

PYTHON_MODEL = Path(__file__).with_name("python_model.py")
log = logging.getLogger(__name__)


def build_cpu_repository(source: Path, destination: Path, model_sets: list[str] | None = None,
                         torch_threads: int = 1) -> list[str]:
    """Build a CPU repository in ``destination`` (new or empty) for ``model_sets`` of ``source``.

    Every set found in ``source`` when ``model_sets`` is empty; ``model.pt`` files are
    linked, not copied. Returns the names of the sets it holds.
    """
    source, destination = Path(source).resolve(), Path(destination)
    names = model_sets or list_model_sets(source)
    if not names:
        raise ModelSetError(f"no model sets (*.modelset.json) in {source}")
    if destination.exists() and any(destination.iterdir()):
        raise FileExistsError(f"{destination} is not empty")
    for name in names:
        add_cpu_model_set(source, destination, name, torch_threads)
    return names


def add_cpu_model_set(source: Path, destination: Path, name: str, torch_threads: int = 1) -> None:
    """Add set ``name`` of ``source`` to the CPU repository ``destination``.

    Its models not yet in ``destination`` (by Triton name and version) are written, then
    its ensemble, then its manifest. Raises :class:`ModelSetError` if a model file is
    missing or does not match the manifest's hash (a set still being copied, say).
    """
    source = Path(source).resolve()
    model_set = load_model_set(source, name, verify=True)
    for entry in model_set.models.values():
        _add_model(source, Path(destination), entry, torch_threads)
    write_ensemble(destination, model_set)
    target = manifest_path(destination, name)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(manifest_path(source, name), staging)
    os.replace(staging, target)
    log.info("cpu repository", extra={"model_set": name, "repository": str(destination)})


def add_new_cpu_model_sets(source: Path, destination: Path, torch_threads: int = 1) -> list[str]:
    """Add the sets of ``source`` that ``destination`` lacks; returns those added.

    A set that cannot be added yet (see :func:`add_cpu_model_set`) is logged and skipped:
    a later call tries again.
    """
    added = []
    for name in sorted(set(list_model_sets(source)) - set(list_model_sets(destination))):
        try:
            add_cpu_model_set(source, destination, name, torch_threads)
        except (ModelSetError, OSError) as exc:
            log.warning("model set not added to the cpu repository",
                        extra={"model_set": name, "error": str(exc)})
            continue
        added.append(name)
    return added


def _add_model(source: Path, destination: Path, entry: ModelEntry, torch_threads: int) -> None:
    model_dir = destination / entry.triton_name
    version_dir = model_dir / str(entry.version)
    if (version_dir / "model.pt").is_symlink():
        return  # shared with a set already there
    config = model_config(entry, "cpu")
    config.parameters["torch_threads"].string_value = str(torch_threads)
    write_config(model_dir, config)
    version_dir.mkdir(exist_ok=True)
    shutil.copyfile(PYTHON_MODEL, version_dir / "model.py")
    # Compiled now, so that the stub's import writes no __pycache__ into a served model's
    # folder: Triton would take the model for changed and reload it with the next
    # ensemble that uses it.
    py_compile.compile(str(version_dir / "model.py"), doraise=True)
    (version_dir / "model.pt").symlink_to(source / entry.path)
