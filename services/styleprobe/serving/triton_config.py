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
derives the CPU variant from the same function. Configurations are ``ModelConfig``
messages of Triton's own schema (``tritonclient``'s ``model_config_pb2``), written in
protobuf text format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from styleprobe.modelset import ModelEntry, ModelSet, TensorSpec

MAX_BATCH_SIZE = 32  # a backend sends chunks of at most this many samples
QUEUE_DELAY_MICROSECONDS = 1000  # how long dynamic batching waits to fill a batch
ENSEMBLE_VERSION = 1
CONFIG_FILE = "config.pbtxt"
Target = Literal["gpu", "cpu"]
Tensor = TypeVar("Tensor", pb.ModelInput, pb.ModelOutput)


def output_name(spec: TensorSpec, index: int) -> str:
    """Triton's name for a TorchScript output: ``<name>__<index>``."""
    return f"{spec.name}__{index}"


def decode_ensemble_name(model_set_name: str) -> str:
    """The ensemble that decodes and classifies: ``<set>-decode``."""
    return f"{model_set_name}-decode"


def _data_type(spec: TensorSpec) -> int:
    return pb.DataType.Value(f"TYPE_{spec.dtype}")


def _tensor(message: type[Tensor], name: str, spec: TensorSpec) -> Tensor:
    return message(name=name, data_type=_data_type(spec), dims=spec.dims)


def _versions(version: int) -> pb.ModelVersionPolicy:
    """Serve exactly ``version``."""
    return pb.ModelVersionPolicy(specific=pb.ModelVersionPolicy.Specific(versions=[version]))


def _warmup(entry: ModelEntry, batch_sizes: list[int]) -> list[pb.ModelWarmup]:
    inputs = {s.name: pb.ModelWarmup.Input(data_type=_data_type(s), dims=s.dims, zero_data=True)
              for s in entry.inputs}
    return [pb.ModelWarmup(name=f"batch_{n}", batch_size=n, inputs=inputs) for n in batch_sizes]


def model_config(entry: ModelEntry, target: Target = "gpu",
                 max_batch_size: int = MAX_BATCH_SIZE) -> pb.ModelConfig:
    """The configuration of one exported model.

    ``gpu``: ``pytorch_libtorch`` on ``KIND_GPU``, warmed up at every batch size from 1 to
    ``max_batch_size`` (dynamic batching may form any of them). ``cpu``: the Python backend
    on ``KIND_CPU`` (see :mod:`styleprobe.serving.cpu_repository`), warmed up once.
    """
    gpu = target == "gpu"
    runtime = {"platform": "pytorch_libtorch"} if gpu else {"backend": "python"}
    return pb.ModelConfig(
        name=entry.triton_name,
        **runtime,
        max_batch_size=max_batch_size,
        version_policy=_versions(entry.version),
        input=[_tensor(pb.ModelInput, s.name, s) for s in entry.inputs],
        output=[_tensor(pb.ModelOutput, output_name(s, i), s)
                for i, s in enumerate(entry.outputs)],
        dynamic_batching=pb.ModelDynamicBatching(
            max_queue_delay_microseconds=QUEUE_DELAY_MICROSECONDS),
        instance_group=[pb.ModelInstanceGroup(
            count=1, kind=pb.ModelInstanceGroup.Kind.Value(f"KIND_{target.upper()}"))],
        model_warmup=_warmup(entry, list(range(1, max_batch_size + 1)) if gpu else [1]),
    )


def ensemble_config(model_set: ModelSet, max_batch_size: int = MAX_BATCH_SIZE) -> pb.ModelConfig:
    """``<set>-decode``: ``w`` -> ``image``, ``logits`` through synthesis and classifier."""
    synthesis, classifier = model_set.models["synthesis"], model_set.models["classifier"]
    w, image, logits = synthesis.inputs[0], synthesis.outputs[0], classifier.outputs[0]
    return pb.ModelConfig(
        name=decode_ensemble_name(model_set.name),
        platform="ensemble",
        max_batch_size=max_batch_size,
        version_policy=_versions(ENSEMBLE_VERSION),
        input=[_tensor(pb.ModelInput, w.name, w)],
        output=[_tensor(pb.ModelOutput, image.name, image),
                _tensor(pb.ModelOutput, logits.name, logits)],
        ensemble_scheduling=pb.ModelEnsembling(step=[
            pb.ModelEnsembling.Step(
                model_name=synthesis.triton_name, model_version=synthesis.version,
                input_map={w.name: w.name}, output_map={output_name(image, 0): image.name}),
            pb.ModelEnsembling.Step(
                model_name=classifier.triton_name, model_version=classifier.version,
                input_map={classifier.inputs[0].name: image.name},
                output_map={output_name(logits, 0): logits.name}),
        ]),
    )


def render(config: pb.ModelConfig) -> str:
    """``config`` in protobuf text format (the ``config.pbtxt`` syntax)."""
    return text_format.MessageToString(config)


def write_config(model_dir: Path, config: pb.ModelConfig) -> Path:
    """Write ``model_dir/config.pbtxt`` atomically; an identical file is left untouched
    (a served model whose folder changes is reloaded with the next ensemble that uses it)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / CONFIG_FILE
    text = render(config)
    if path.is_file() and path.read_text() == text:
        return path
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
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
