"""A CPU model repository built from the same TorchScript files as the production one.

The ``tritonserver`` of the ``nvidia-pytriton`` wheel has no ``pytorch_libtorch`` backend,
so each model becomes a Python-backend model (:mod:`styleprobe.serving.python_model`)
that loads the exported ``model.pt`` with ``torch.jit.load``. Model names, versions,
tensor names, batching and the decode ensemble are those of the production
configuration; only the backend, the instance kind (``KIND_CPU``) and the warmup differ.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from styleprobe.modelset import ModelSetError, list_model_sets, load_model_set
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
        model_set = load_model_set(source, name, verify=True)
        for entry in model_set.models.values():
            config = model_config(entry, "cpu")
            config.parameters["torch_threads"].string_value = str(torch_threads)
            model_dir = destination / entry.triton_name
            write_config(model_dir, config)
            version_dir = model_dir / str(entry.version)
            version_dir.mkdir()
            shutil.copyfile(PYTHON_MODEL, version_dir / "model.py")
            (version_dir / "model.pt").symlink_to(source / entry.path)
        write_ensemble(destination, model_set)
        log.info("cpu repository", extra={"model_set": name, "repository": str(destination)})
    return names
