"""Doubles for engine tests: a backend that fails on demand, a linear backend whose
classifier depends on one known latent direction, and a store that records its writes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from styleprobe.backends.base import BackendError, ModelBackend
from styleprobe.backends.counting import CountingBackend
from styleprobe.modelset import ClassifierInfo, ModelSet, TensorSpec
from styleprobe.storage.base import ArtifactStore, StoreError


class FailingBackend(CountingBackend):
    """Counts calls like :class:`CountingBackend` and fails every call to ``fail_on``."""

    def __init__(self, inner: ModelBackend, fail_on: str) -> None:
        super().__init__(inner)
        self.fail_on = fail_on

    def count(self, model: str, batch: np.ndarray) -> None:
        super().count(model, batch)
        if model == self.fail_on:
            raise BackendError(f"injected failure in {model}")


class LinearBackend:
    """A known answer: ``G(w)`` is a fixed linear image of ``w`` and class ``k``'s logit
    is ``gain * (w · u_k)``, recovered from the image; the true target direction is
    ``u_k - mean(u)`` (for two classes, along ``u_1 - u_0``)."""

    def __init__(self, model_set: ModelSet, class_names: list[str], gain: float = 4.0,
                 seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        d, r = model_set.w_dim, model_set.preprocessing.resolution
        k = len(class_names)
        self.model_set = replace(
            model_set, classifier=ClassifierInfo(class_names=class_names),
            default_target=class_names[-1],
            models={**model_set.models, "classifier": replace(
                model_set.models["classifier"], outputs=[TensorSpec("logits", [k])])})
        self.basis = np.linalg.qr(rng.standard_normal((r * r, d)))[0]  # orthonormal columns
        self.units = rng.standard_normal((k, d))
        self.units /= np.linalg.norm(self.units, axis=1, keepdims=True)
        self.gain, self.r = gain, r

    def true_direction(self, class_index: int) -> np.ndarray:
        v = self.units[class_index] - self.units.mean(axis=0)
        return v / np.linalg.norm(v)

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return z.astype(np.float32)

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        flat = (w.astype(np.float64) @ self.basis.T) * 0.05
        return flat.reshape(len(w), 1, self.r, self.r).astype(np.float32)

    def encoder(self, image: np.ndarray) -> np.ndarray:
        flat = image.reshape(len(image), -1).astype(np.float64) / 0.05
        return (flat @ self.basis).astype(np.float32)

    def classifier(self, image: np.ndarray) -> np.ndarray:
        return (self.gain * self.encoder(image).astype(np.float64) @ self.units.T).astype(
            np.float32)

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.synthesis(w)
        return images, self.classifier(images)

    def close(self) -> None:
        pass


class RecordingStore:
    """Wraps a store, records the order of puts, and can fail on a put whose key ends
    with ``fail_on``."""

    def __init__(self, inner: ArtifactStore, fail_on: str | None = None) -> None:
        self.inner, self.fail_on = inner, fail_on
        self.puts: list[str] = []

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        if self.fail_on and key.endswith(self.fail_on):
            raise StoreError(f"injected failure writing {key}")
        self.puts.append(key)
        self.inner.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def content_type(self, key: str) -> str:
        return self.inner.content_type(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)
