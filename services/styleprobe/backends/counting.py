"""A backend wrapper that counts calls and rows per model: how benchmarks and tests see
how much model work a step did (e.g. none at all for a cached direction)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from styleprobe.backends.base import ModelBackend


class CountingBackend:
    """Delegates to ``inner``; ``calls[model]`` and ``rows[model]`` count what was asked."""

    def __init__(self, inner: ModelBackend) -> None:
        self.inner, self.model_set = inner, inner.model_set
        self.calls: Counter[str] = Counter()
        self.rows: Counter[str] = Counter()

    def count(self, model: str, batch: np.ndarray) -> None:
        self.calls[model] += 1
        self.rows[model] += len(batch)

    def reset(self) -> None:
        self.calls.clear()
        self.rows.clear()

    def mapping(self, z: np.ndarray) -> np.ndarray:
        self.count("mapping", z)
        return self.inner.mapping(z)

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        self.count("synthesis", w)
        return self.inner.synthesis(w)

    def encoder(self, image: np.ndarray) -> np.ndarray:
        self.count("encoder", image)
        return self.inner.encoder(image)

    def classifier(self, image: np.ndarray) -> np.ndarray:
        self.count("classifier", image)
        return self.inner.classifier(image)

    def styles(self, w: np.ndarray) -> np.ndarray:
        self.count("styles", w)
        return self.inner.styles(w)

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        self.count("stylesynthesis", styles)
        return self.inner.style_synthesis(styles)

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.count("decode_and_classify", w)
        return self.inner.decode_and_classify(w)

    def close(self) -> None:
        self.inner.close()
