"""Bias discovery: does the direction probed for a shortcut-trained classifier show the shortcut?

A classifier is trained on phantoms with the planted marker (present on ``rate`` of the
positives and ``1 - rate`` of the negatives), drawn from the borderline cases whose
disease score lies near the label's threshold: there the disease is hard to see and the
tag is not, so the classifier scores best by reading the tag (as a network trained on
hard cases from a site that tags its positives would). Its direction is probed with the
engine, through a backend that pairs the model set's generator and encoder with this
classifier; the oracle then
measures how far each traversal moves the marker against the disease factors. Grad-CAM
of the same classifier is measured on the same images, for comparison.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from styleprobe.backends.base import ModelBackend
from styleprobe.data.datasets import PHANTOMS, ImageSet, concatenate, phantom_set, render
from styleprobe.data.phantom import draw_marker
from styleprobe.evaluation.localization import difference_magnitude, gradcam, mass_inside
from styleprobe.evaluation.oracle import (
    DISEASE_SCORE,
    LABEL_THRESHOLDS,
    Oracle,
    composite_score,
)
from styleprobe.evaluation.traversals import Traversals, factor_motion, traverse_many
from styleprobe.explain.direction import DirectionError, ensure_direction, load_direction
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import ProbeSettings
from styleprobe.models.classifier import Classifier
from styleprobe.storage.base import ArtifactStore
from styleprobe.training.checkpoint import to_tensor
from styleprobe.training.classifier import ClassifierTrainConfig, load_classifier, train_classifier

log = logging.getLogger(__name__)
SHORTCUT_SEED = 4_000_037  # training phantoms of the shortcut classifier
SHORTCUT_TEST_SEED = 4_100_037
MARKER = "marker"
IDENTIFY_RATIO = 2.0  # the marker must move this many times more than any disease factor


@dataclass(frozen=True)
class ShortcutConfig:
    """How the shortcut classifier is trained (part of its cache key)."""

    rate: float = 1.0  # the marker on every positive and no negative of the training set
    borderline: float = 0.03  # training cases lie this close to the label's threshold
    train_samples: int = 6000
    test_samples: int = 1000
    epochs: int = 4
    seed: int = 0


class SwappedClassifier:
    """A :class:`~styleprobe.backends.base.ModelBackend` with another backend's generator
    and encoder and an eager classifier; its manifest names that classifier (by a hash of
    its weights), so its directions are stored under keys of their own."""

    def __init__(self, base: ModelBackend, classifier: torch.nn.Module, name: str) -> None:
        self.base, self.network = base, classifier.eval()
        buffer = io.BytesIO()
        torch.save(classifier.state_dict(), buffer)
        entry = replace(base.model_set.models["classifier"], triton_name=name,
                        sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
        self.model_set = replace(base.model_set,
                                 models={**base.model_set.models, "classifier": entry})

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return self.base.mapping(z)

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        return self.base.synthesis(w)

    def encoder(self, image: np.ndarray) -> np.ndarray:
        return self.base.encoder(image)

    def styles(self, w: np.ndarray) -> np.ndarray:
        return self.base.styles(w)

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        return self.base.style_synthesis(styles)

    def classifier(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32))
        with torch.no_grad():
            return torch.cat([self.network(x[i:i + 256])
                              for i in range(0, len(x), 256)]).numpy()

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.synthesis(w)
        return images, self.classifier(images)

    def close(self) -> None:
        """The base backend belongs to the caller; nothing to release here."""


def marker_region(size: int, channels: int = 1) -> np.ndarray:
    """(size, size) 0/1: the pixels the planted corner marker covers."""
    blank = np.zeros((size, size, channels), np.float32)
    # stamping blends image and tag by the tag's coverage a: white minus black is 1 - a
    coverage = 1.0 - (draw_marker(blank + 1, size, 1.0) - draw_marker(blank, size, 1.0))
    return (coverage[..., 0] > 0.5).astype(np.uint8)


def load_or_train_shortcut_classifier(cache_dir: Path, phantoms: str, resolution: int,
                                      class_names: list[str],
                                      config: ShortcutConfig) -> Classifier:
    """The cached shortcut classifier for these phantoms and size, trained if absent."""
    identity = json.dumps({"phantoms": phantoms, "resolution": resolution,
                           "class_names": class_names, **asdict(config)}, sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    folder = Path(cache_dir) / f"shortcut-{phantoms}-{resolution}-{digest}"
    if not (folder / "classifier.pt").is_file():
        log.info("training shortcut classifier", extra={"folder": str(folder)})
        train = borderline_cases(phantoms, SHORTCUT_SEED + config.seed, resolution, config)
        test = render(phantom_set(phantoms, SHORTCUT_TEST_SEED + config.seed, resolution,
                                  config.rate), config.test_samples)
        train_classifier(train, test, class_names, folder,
                         ClassifierTrainConfig(epochs=config.epochs, seed=config.seed))
    return load_classifier(folder / "classifier.pt")[0]


def borderline_cases(phantoms: str, seed: int, resolution: int,
                     config: ShortcutConfig, chunk: int = 2000) -> ImageSet:
    """``config.train_samples`` phantoms with the marker at ``config.rate`` whose disease
    score lies within ``config.borderline`` of the label's threshold."""
    source = phantom_set(phantoms, seed, resolution, config.rate)
    kept: list[ImageSet] = []
    start = 0
    while sum(map(len, kept)) < config.train_samples:
        data = render(source, chunk, start)
        start += chunk
        distance = np.abs(composite_score(phantoms, data.factors) - LABEL_THRESHOLDS[phantoms])
        kept.append(data.subset(np.flatnonzero(distance <= config.borderline)))
    return concatenate(kept).subset(slice(0, config.train_samples))


def shortcut_reliance(classifier: Classifier, phantoms: str, resolution: int,
                      class_index: int, config: ShortcutConfig) -> dict[str, float]:
    """Test AUC of the shortcut classifier with the marker as in training, independent of
    the label, and reversed: a classifier that leans on the marker falls on the last."""
    aucs = {}
    for name, rate in (("auc_marker_as_trained", config.rate), ("auc_marker_independent", 0.5),
                       ("auc_marker_reversed", 1.0 - config.rate)):
        data = render(phantom_set(phantoms, SHORTCUT_TEST_SEED + config.seed + 1, resolution,
                                  rate), config.test_samples)
        with torch.no_grad():
            logits = classifier(to_tensor(data.images)).numpy()
        aucs[name] = float(roc_auc_score(data.labels == 1,
                                         target_probability(logits, class_index)))
    return aucs


def identified(motion: dict[str, dict[str, float]], disease: list[str]) -> bool:
    """Whether a traversal moved the marker at least :data:`IDENTIFY_RATIO` times as far as
    every disease factor (and their composite), in standard units."""
    largest = max(motion[k]["abs_change_mean"] for k in disease)
    return bool(motion[MARKER]["abs_change_mean"] >= IDENTIFY_RATIO * largest)


@dataclass
class BiasOutcome:
    """The numbers of the bias experiment and the pictures of its examples."""

    results: dict[str, Any]
    examples: dict[str, np.ndarray]  # name: (K, R, R[, C]) for the report's panel


def run_bias_experiment(backend: ModelBackend, store: ArtifactStore, oracle: Oracle,
                        images: np.ndarray, has_marker: np.ndarray, w: np.ndarray,
                        bundled_gradcam: np.ndarray | None,
                        bundled_traversals: Traversals, lambdas: np.ndarray,
                        probe: ProbeSettings, cache_dir: Path, config: ShortcutConfig,
                        examples: int = 4) -> BiasOutcome:
    """Train (or load) the shortcut classifier, probe its direction with the engine,
    traverse the encoded images ``w`` and measure marker against disease movement;
    ``images`` are the NCHW test images, ``has_marker`` their true marker flags, and the
    bundled classifier's Grad-CAM and traversals are the comparison."""
    model_set = backend.model_set
    phantoms = oracle.phantoms
    channels, resolution = model_set.image_shape[:2]
    target = model_set.default_target
    class_index = model_set.classifier.class_index(target)
    classifier = load_or_train_shortcut_classifier(
        cache_dir, phantoms, resolution, model_set.classifier.class_names, config)
    swapped = SwappedClassifier(backend, classifier, f"{model_set.name}-shortcut-classifier")
    z = np.random.default_rng(probe.seed + 1).standard_normal((200, model_set.z_dim))
    generated = backend.synthesis(backend.mapping(z.astype(np.float32)))
    measured = {
        "shortcut_rate": config.rate,
        "classifier": {"train_samples": config.train_samples, "epochs": config.epochs,
                       "borderline": config.borderline,
                       **shortcut_reliance(classifier, phantoms, resolution, class_index,
                                           config)},
        "generator_marker_share": float(np.mean(
            oracle.read_factors(generated)[MARKER] > 0.5)),
    }
    try:
        direction = load_direction(store, ensure_direction(swapped, store, target, probe))
    except DirectionError as exc:  # e.g. a marker reader over a generator with no markers
        log.warning("shortcut direction not probed", extra={"reason": str(exc)})
        return BiasOutcome({**measured, "direction": None, "not_probed": str(exc)}, {})
    _, logits = swapped.decode_and_classify(w)
    traversals = traverse_many(swapped, w, target_probability(logits, class_index), direction,
                               lambdas, oracle, search=None)
    motion = factor_motion(traversals, oracle.factors)
    bundled_motion = factor_motion(bundled_traversals, oracle.factors)
    disease = [*PHANTOMS[phantoms].disease_factors, DISEASE_SCORE]
    region = marker_region(resolution, channels)
    marked = np.flatnonzero(has_marker)
    shortcut_cam = gradcam(classifier, images[marked], class_index) if len(marked) else None
    reconstructions = backend.synthesis(w)
    shortcut_diff = difference_magnitude(traversals.end_frames, reconstructions)
    bundled_diff = difference_magnitude(bundled_traversals.end_frames, reconstructions)
    results = {
        **measured,
        "direction": {"key": direction.key, "auc": direction.auc,
                      "positive_share": direction.positive_share},
        "shortcut_direction": {k: motion[k] for k in [MARKER, *disease]},
        "bundled_direction": {k: bundled_motion[k] for k in [MARKER, *disease]},
        "identified": identified(motion, disease),
        "bundled_direction_identified": identified(bundled_motion, disease),
        "difference_mass_in_marker_region": {
            "shortcut_direction": mass_inside(shortcut_diff, region),
            "bundled_direction": mass_inside(bundled_diff, region)},
        "marker_region_share_of_image": float(region.mean()),
        "gradcam_mass_in_marker_region": {
            "images_with_marker": len(marked),
            "shortcut_classifier": (None if shortcut_cam is None
                                    else mass_inside(shortcut_cam, region)),
            "bundled_classifier": (None if bundled_gradcam is None or not len(marked)
                                   else mass_inside(bundled_gradcam[marked], region))},
    }
    chosen = marked[:examples]
    pictures = {"input": images[chosen]}
    if bundled_gradcam is not None:
        pictures["bundled_gradcam"] = bundled_gradcam[chosen]
    if shortcut_cam is not None:
        pictures["shortcut_gradcam"] = shortcut_cam[:examples]
    pictures |= {"reconstruction": reconstructions[chosen],
                 "counterfactual": traversals.end_frames[chosen],
                 "difference": shortcut_diff[chosen]}
    return BiasOutcome(results, pictures)
