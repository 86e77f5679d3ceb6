"""The local model backend: a model set's four TorchScript files, run in this process.

Each chunk a model runs is recorded in the metrics (latency, batch size) like a Triton
call; ``decode_and_classify`` is recorded as its two calls, synthesis and classifier.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from styleprobe.backends.base import BackendError, checked_batch
from styleprobe.metrics import observe_backend_call
from styleprobe.modelset import MODEL_KINDS, STYLESPACE_KINDS, load_model_set

log = logging.getLogger(__name__)


class LocalBackend:
    """:class:`~styleprobe.backends.base.ModelBackend` over ``torch.jit.load`` models.

    Batches larger than ``max_batch`` are split into chunks; every call checks the
    shapes of its input and output against the model set's manifest. The models run on
    ``device`` (a torch device name); inputs and outputs stay numpy on the host.
    """

    def __init__(self, repository: Path, model_set: str, max_batch: int = 64,
                 device: str = "cpu") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise BackendError(f"unknown torch device {device!r} "
                               "(STYLEPROBE_LOCAL_DEVICE)") from exc
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {device!r} asked for, but this torch build sees no "
                               "CUDA GPU (STYLEPROBE_LOCAL_DEVICE)")
        self.repository = Path(repository)
        self.model_set = load_model_set(self.repository, model_set, verify=True)
        self.max_batch = max_batch
        self._modules: dict[str, torch.jit.ScriptModule] = {}
        for kind in (*MODEL_KINDS, *(STYLESPACE_KINDS if self.model_set.has_stylespace else ())):
            entry = self.model_set.models[kind]
            try:
                with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
                    warnings.simplefilter("ignore", DeprecationWarning)
                    module = torch.jit.load(str(self.repository / entry.path),
                                            map_location=self.device)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"cannot load {entry.triton_name}: {exc}") from exc
            self._modules[kind] = module.eval()
        log.info("loaded model set", extra={"model_set": model_set,
                                             "repository": str(self.repository)})

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return self._run("mapping", z)

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        return self._run("synthesis", w)

    def encoder(self, image: np.ndarray) -> np.ndarray:
        return self._run("encoder", image)

    def classifier(self, image: np.ndarray) -> np.ndarray:
        return self._run("classifier", image)

    def styles(self, w: np.ndarray) -> np.ndarray:
        return self._run("styles", w)

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        return self._run("stylesynthesis", styles)

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.synthesis(w)
        return images, self.classifier(images)

    def close(self) -> None:
        self._modules.clear()

    def _run(self, kind: str, batch: np.ndarray) -> np.ndarray:
        if not self._modules:
            raise BackendError("this backend is closed")
        if kind not in self._modules:
            raise BackendError(f"model set {self.model_set.name!r} has no {kind} model "
                               "(export its StyleSpace: scripts/stylespace_from_model_set.py)")
        entry = self.model_set.models[kind]
        batch = checked_batch(entry.triton_name, "input", batch, entry.inputs[0].dims)
        module = self._modules[kind]
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.max_batch):
                chunk = torch.from_numpy(np.ascontiguousarray(batch[start:start + self.max_batch]))
                started = time.perf_counter()
                try:
                    outputs.append(module(chunk.to(self.device)).cpu().numpy())
                except RuntimeError as exc:
                    raise BackendError(f"{entry.triton_name} failed: {exc}") from exc
                observe_backend_call(kind, len(chunk), time.perf_counter() - started)
        expected = entry.outputs[0].dims
        if not outputs:
            return np.zeros((0, *expected), np.float32)
        return checked_batch(entry.triton_name, "output", np.concatenate(outputs), expected)

