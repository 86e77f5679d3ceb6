"""Triton model configurations (``config.pbtxt``) for the models of a model set.

A model set maps onto Triton one to one: each model of the manifest is the Triton model
``<set>-<kind>`` (``knee-oa-synthesis``) at the manifest's version, loaded with an explicit
``version_policy: specific``, so two sets, or two versions, are served side by side.

Tensor names follow Triton's PyTorch-backend rules: an input is named after its
TorchScript ``forward`` argument (``z``, ``w``, ``image``), an output ``<name>__<index>``
(``w__0``, ``image__0``, ``logits__0``). Each set also gets the ensemble
``<set>-decode``, ``w`` -> ``image`` and ``logits`` (synthesis, then classifier), so that
a traversal frame is classified inside the server and never travels back just for that.

The production configuration (:func:`model_config` with ``target="gpu"``) runs the
TorchScript with ``pytorch_libtorch`` on GPU, with dynamic batching and a warmup for
every batch size up to ``max_batch_size``; :mod:`styleprobe.serving.cpu_repository`
derives the CPU variant from the same function.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from styleprobe.modelset import ModelEntry, ModelSet, TensorSpec

MAX_BATCH_SIZE = 32  # a backend sends chunks of at most this many samples
QUEUE_DELAY_MICROSECONDS = 1000  # how long dynamic batching waits to fill a batch
ENSEMBLE_VERSION = 1
CONFIG_FILE = "config.pbtxt"
Target = Literal["gpu", "cpu"]


class Enum(str):
    """A protobuf enum value: written without quotes."""


def output_name(spec: TensorSpec, index: int) -> str:
    """Triton's name for a TorchScript output: ``<name>__<index>``."""
    return f"{spec.name}__{index}"


def decode_ensemble_name(model_set_name: str) -> str:
    """The ensemble that decodes and classifies: ``<set>-decode``."""
    return f"{model_set_name}-decode"


def _tensor(name: str, spec: TensorSpec) -> dict[str, Any]:
    return {"name": name, "data_type": Enum(f"TYPE_{spec.dtype}"), "dims": list(spec.dims)}


def map_field(pairs: dict[str, Any]) -> list[dict[str, Any]]:
    """A protobuf map field as a list of key/value entries."""
    return [{"key": k, "value": v} for k, v in pairs.items()]


def _warmup(entry: ModelEntry, batch_sizes: list[int]) -> list[dict[str, Any]]:
    inputs = {s.name: {"data_type": Enum(f"TYPE_{s.dtype}"), "dims": list(s.dims),
                       "zero_data": True} for s in entry.inputs}
    return [{"name": f"batch_{n}", "batch_size": n, "inputs": map_field(inputs)}
            for n in batch_sizes]


def model_config(entry: ModelEntry, target: Target = "gpu",
                 max_batch_size: int = MAX_BATCH_SIZE) -> dict[str, Any]:
    """The configuration of one exported model.

    ``gpu``: ``pytorch_libtorch`` on ``KIND_GPU``, warmed up at every batch size from 1 to
    ``max_batch_size`` (dynamic batching may form any of them). ``cpu``: the Python backend
    on ``KIND_CPU`` (see :mod:`styleprobe.serving.cpu_repository`), warmed up once.
    """
    config: dict[str, Any] = {"name": entry.triton_name}
    if target == "gpu":
        config["platform"] = "pytorch_libtorch"
    else:
        config["backend"] = "python"
    config |= {
        "max_batch_size": max_batch_size,
        "version_policy": {"specific": {"versions": [entry.version]}},
        "input": [_tensor(s.name, s) for s in entry.inputs],
        "output": [_tensor(output_name(s, i), s) for i, s in enumerate(entry.outputs)],
        "dynamic_batching": {"max_queue_delay_microseconds": QUEUE_DELAY_MICROSECONDS},
        "instance_group": [{"count": 1, "kind": Enum(f"KIND_{target.upper()}")}],
        "model_warmup": _warmup(entry, list(range(1, max_batch_size + 1)) if target == "gpu"
                                else [1]),
    }
    return config


def ensemble_config(model_set: ModelSet, max_batch_size: int = MAX_BATCH_SIZE) -> dict[str, Any]:
    """``<set>-decode``: ``w`` -> ``image``, ``logits`` through synthesis and classifier."""
    synthesis, classifier = model_set.models["synthesis"], model_set.models["classifier"]
    w, image, logits = synthesis.inputs[0], synthesis.outputs[0], classifier.outputs[0]
    return {
        "name": decode_ensemble_name(model_set.name),
        "platform": "ensemble",
        "max_batch_size": max_batch_size,
        "version_policy": {"specific": {"versions": [ENSEMBLE_VERSION]}},
        "input": [_tensor(w.name, w)],
        "output": [_tensor(image.name, image), _tensor(logits.name, logits)],
        "ensemble_scheduling": {"step": [
            {"model_name": synthesis.triton_name, "model_version": synthesis.version,
             "input_map": map_field({w.name: w.name}),
             "output_map": map_field({output_name(image, 0): image.name})},
            {"model_name": classifier.triton_name, "model_version": classifier.version,
             "input_map": map_field({classifier.inputs[0].name: image.name}),
             "output_map": map_field({output_name(logits, 0): logits.name})},
        ]},
    }


def render(config: dict[str, Any]) -> str:
    """``config`` in protobuf text format (the ``config.pbtxt`` syntax)."""
    return "\n".join(_field(key, value, 0) for key, value in config.items()) + "\n"


def _field(key: str, value: Any, depth: int) -> str:
    pad = "  " * depth
    if isinstance(value, dict):
        return f"{pad}{key} {{\n{_body(value, depth + 1)}\n{pad}}}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        items = ",\n".join(f"{pad}  {{\n{_body(item, depth + 2)}\n{pad}  }}" for item in value)
        return f"{pad}{key} [\n{items}\n{pad}]"
    if isinstance(value, list):
        return f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]"
    return f"{pad}{key}: {_scalar(value)}"


def _body(message: dict[str, Any], depth: int) -> str:
    return "\n".join(_field(key, value, depth) for key, value in message.items())


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def write_config(model_dir: Path, config: dict[str, Any]) -> Path:
    """Write ``model_dir/config.pbtxt`` atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render(config))
    os.replace(tmp, path)
    return path


def write_ensemble(repository: Path, model_set: ModelSet) -> Path:
    """Write the decode ensemble's configuration and its (empty) version folder."""
    model_dir = Path(repository) / decode_ensemble_name(model_set.name)
    version_dir = model_dir / str(ENSEMBLE_VERSION)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / ".gitkeep").touch()  # Triton needs the folder; git needs a file in it
    return write_config(model_dir, ensemble_config(model_set))


def write_production_configs(repository: Path, model_set: ModelSet) -> list[Path]:
    """Write the GPU ``config.pbtxt`` of every model of ``model_set`` and its ensemble."""
    paths = [write_config(Path(repository) / entry.triton_name, model_config(entry, "gpu"))
             for entry in model_set.models.values()]
    return [*paths, write_ensemble(repository, model_set)]
