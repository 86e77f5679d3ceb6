"""Triton Python-backend model that runs one exported TorchScript file on CPU.

Copied as ``<model>/<version>/model.py`` into a CPU repository (see
:mod:`styleprobe.serving.cpu_repository`) next to ``model.pt``; it only runs inside
Triton's Python-backend stub, which provides ``triton_python_backend_utils``. The requests
of one dynamic batch are concatenated and run as one batch, like ``pytorch_libtorch`` does.
Tensors cross the stub boundary by DLPack, not numpy: the wheel's stub is built against
the numpy 1 ABI and returns empty buffers for numpy 2 arrays.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
import triton_python_backend_utils as pb_utils  # provided by the stub
from torch.utils import dlpack


class TritonPythonModel:
    """Inputs in configuration order are the ``forward`` arguments; outputs its results."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.input_names = [t["name"] for t in config["input"]]
        self.output_names = [t["name"] for t in config["output"]]
        threads = config.get("parameters", {}).get("torch_threads", {}).get("string_value")
        torch.set_num_threads(int(threads or 1))
        path = Path(args["model_repository"]) / args["model_version"] / "model.pt"
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
            warnings.simplefilter("ignore", DeprecationWarning)
            self.module = torch.jit.load(str(path), map_location="cpu").eval()

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            columns = [[dlpack.from_dlpack(pb_utils.get_input_tensor_by_name(r, name).to_dlpack())
                        for r in requests] for name in self.input_names]
            with torch.inference_mode():
                result = self.module(*(torch.cat(c) for c in columns))
            outputs = result if isinstance(result, tuple) else (result,)
        except Exception as exc:  # every request of the batch gets the cause
            error = pb_utils.TritonError(f"{type(exc).__name__}: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for batch in columns[0]:
            stop = start + len(batch)
            tensors = [pb_utils.Tensor.from_dlpack(name, dlpack.to_dlpack(out[start:stop]))
                       for name, out in zip(self.output_names, outputs, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
