"""Probe the latent direction along which the classifier's target prediction grows.

Sample ``w_i = mapping(z_i)`` from seeded ``z``, score ``p_i = f(G(w_i))`` for the
target class (one-vs-rest), binarize at the threshold, fit a logistic regression on a
train split and report its held-out AUC and accuracy. The unit weight vector is the
direction α; ``+λ`` along it raises the target probability. Optionally α is made
orthogonal to nuisance directions of the model set (InterFaceGAN's conditional
manipulation): the span of the chosen ones is projected out and α renormalised.

A direction is stored once under ``directions/<sha256>.json``, the hash of everything
that determines it (model versions, target, threshold, probe parameters, nuisance
directions removed); a second request with the same key makes no model call at all.

A generator that (almost) never draws one side of the classifier's decision cannot show
that decision: no direction exists to find. That is a finding about the pair of models,
not an error of the request. It is known before any probe when the model set records the
generator's class coverage (``styleprobe model-set add-classifier`` measures it), and
otherwise learnt from the probe; either way it is remembered beside the direction, as
``directions/<sha256>.finding.json``, so a later job fails at once with the same words.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from styleprobe.backends.base import ModelBackend
from styleprobe.explain.artifacts import get_json, put_json
from styleprobe.explain.scores import predicted, target_probability
from styleprobe.explain.spec import MIN_PER_CLASS, JobSpecError, ProbeSettings, nuisance_names
from styleprobe.metrics import stage_timer
from styleprobe.modelset import ModelSet
from styleprobe.storage.base import ArtifactStore

log = logging.getLogger(__name__)
PROBE_CHUNK = 512  # latents decoded per engine-level step (the backend chunks further)
Progress = Callable[[str, float], None]


class DirectionError(JobSpecError):
    """No direction can be probed with these settings; the message says why."""


class GeneratorCoverageError(DirectionError):
    """The generator (almost) never draws one side of the classifier's decision."""


@dataclass
class Direction:
    """A unit direction in W and how well it separates the target class."""

    key: str
    target: str
    class_index: int
    threshold: float
    vector: list[float]
    auc: float  # held-out AUC of the projection w·α (after any orthogonalisation)
    accuracy: float  # held-out accuracy of the fitted logistic regression
    auc_unconstrained: float  # held-out AUC before orthogonalisation
    positive_share: float  # share of probe samples predicted as the target
    latent_std: float  # spread of the probe latents along α: the size of one λ unit
    samples: int
    train_samples: int
    test_samples: int
    probe: dict[str, Any]
    generator: list[str]
    classifier: str
    orthogonalized_against: dict[str, float] = field(default_factory=dict)  # name: cosine

    def array(self) -> np.ndarray:
        return np.asarray(self.vector, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def direction_key(model_set: ModelSet, target: str, probe: ProbeSettings,
                  orthogonalize: list[str]) -> str:
    """``directions/<sha256>.json``: the hash of everything the direction depends on."""
    identity = {
        "generator": _generator_versions(model_set),
        "classifier": model_set.models["classifier"].version_id,
        "target": target,
        "threshold": model_set.classifier.threshold,
        "probe": asdict(probe),
        "orthogonalize": {name: _vector_hash(model_set.nuisance_directions[name])
                          for name in sorted(orthogonalize)},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"directions/{digest}.json"


@stage_timer("direction")
def ensure_direction(backend: ModelBackend, store: ArtifactStore, target: str,
                     probe: ProbeSettings, orthogonalize: list[str] | tuple[str, ...] = (),
                     progress: Progress | None = None) -> str:
    """Key of the stored direction for these settings, probing it only if absent."""
    model_set = backend.model_set
    names = nuisance_names(model_set, orthogonalize)
    key = direction_key(model_set, target, probe, names)
    if store.exists(key):
        log.info("direction cached", extra={"key": key})
        return key
    remembered = finding_key(key)
    if store.exists(remembered):
        raise GeneratorCoverageError(get_json(store, remembered)["finding"])
    try:
        coverage_check(model_set, target, probe)
        direction = probe_direction(backend, target, probe, names, key, progress)
    except GeneratorCoverageError as exc:
        put_json(store, remembered, {"finding": str(exc), "target": target,
                                     "probe": asdict(probe)})
        raise
    put_json(store, key, direction.to_dict())
    log.info("direction probed", extra={"key": key, "auc": direction.auc})
    return key


def finding_key(key: str) -> str:
    """Where a finding that no direction exists for ``key``'s settings is remembered."""
    return key.removesuffix(".json") + ".finding.json"


def needed_per_side(probe: ProbeSettings) -> int:
    """The fewest samples each side of the decision needs for a probe's train/test split."""
    return math.ceil(MIN_PER_CLASS / min(probe.test_fraction, 1 - probe.test_fraction))


def generator_finding(what: str, count: int, total: int) -> str:
    """The finding that the generator rarely draws ``what`` (``count`` of ``total``)."""
    return (f"the generator draws {what} on {count} of {total} samples: it cannot show this "
            "classifier's decision; train or fine-tune the generator on images that "
            "contain it")


def rare_side_finding(model_set: ModelSet, target: str, positives: int, total: int) -> str:
    """The finding for a probe whose samples were called ``target`` ``positives`` times."""
    if positives <= total - positives:
        return generator_finding(f"what this classifier calls {target!r}", positives, total)
    others = [name for name in model_set.classifier.class_names if name != target]
    what = (f"what this classifier calls {others[0]!r}" if len(others) == 1
            else f"anything this classifier does not call {target!r}")
    return generator_finding(what, total - positives, total)


def coverage_check(model_set: ModelSet, target: str, probe: ProbeSettings) -> None:
    """:class:`GeneratorCoverageError` before any probe when the model set's recorded class
    coverage of the generator (``metrics.generator_coverage``: share of samples called each
    class, over ``metrics.generator_coverage_samples``) says the probe would find too few
    samples on one side."""
    coverage = model_set.metrics.get("generator_coverage")
    if not coverage or target not in coverage:
        return
    total = int(model_set.metrics.get("generator_coverage_samples", 0))
    share = float(coverage[target])
    if min(share, 1.0 - share) * probe.samples < needed_per_side(probe):
        raise GeneratorCoverageError(rare_side_finding(model_set, target,
                                                       round(share * total), total))


def load_direction(store: ArtifactStore, key: str) -> Direction:
    return Direction(**get_json(store, key))


def sample_latents(backend: ModelBackend, probe: ProbeSettings) -> np.ndarray:
    """``mapping(z)`` for seeded standard-normal ``z``, truncated towards w_avg by psi."""
    model_set = backend.model_set
    rng = np.random.default_rng(probe.seed)
    z = rng.standard_normal((probe.samples, model_set.z_dim)).astype(np.float32)
    w = backend.mapping(z)
    if probe.truncation_psi != 1.0:
        w_avg = np.asarray(model_set.w_avg, np.float32)
        w = w_avg + probe.truncation_psi * (w - w_avg)
    return w.astype(np.float32)


def score_latents(backend: ModelBackend, w: np.ndarray, class_index: int,
                  progress: Progress | None = None) -> np.ndarray:
    """Target probability of ``G(w)`` for every latent, decoded in chunks."""
    scores = []
    for start in range(0, len(w), PROBE_CHUNK):
        _, logits = backend.decode_and_classify(w[start:start + PROBE_CHUNK])
        scores.append(target_probability(logits, class_index))
        if progress:
            progress("direction", min(1.0, (start + PROBE_CHUNK) / len(w)))
    return np.concatenate(scores)


def probe_direction(backend: ModelBackend, target: str, probe: ProbeSettings,
                    orthogonalize: list[str], key: str,
                    progress: Progress | None = None) -> Direction:
    """Sample, score and fit: the direction of ``target`` (no caching here)."""
    model_set = backend.model_set
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    w = sample_latents(backend, probe)
    labels = predicted(score_latents(backend, w, class_index, progress), threshold)
    positives = int(labels.sum())
    test_size = round(probe.test_fraction * len(labels))
    fewest = min(positives, len(labels) - positives)
    if fewest < needed_per_side(probe):
        raise GeneratorCoverageError(rare_side_finding(model_set, target, positives,
                                                      len(labels)))
    w_train, w_test, y_train, y_test = train_test_split(
        w, labels, test_size=test_size, random_state=probe.seed, stratify=labels)
    model = LogisticRegression(C=probe.regularization, max_iter=2000)
    model.fit(w_train, y_train)
    fitted = model.coef_[0] / np.linalg.norm(model.coef_[0])
    vector, cosines = orthogonalized(fitted, model_set, orthogonalize)
    projection = w_test @ vector
    return Direction(
        key=key, target=target, class_index=class_index, threshold=threshold,
        vector=[float(v) for v in vector],
        auc=float(roc_auc_score(y_test, projection)),
        accuracy=float(model.score(w_test, y_test)),
        auc_unconstrained=float(roc_auc_score(y_test, w_test @ fitted)),
        positive_share=positives / len(labels),
        latent_std=float(np.std(w @ vector)),
        samples=len(labels), train_samples=len(y_train), test_samples=len(y_test),
        probe=asdict(probe), generator=_generator_versions(model_set),
        classifier=model_set.models["classifier"].version_id,
        orthogonalized_against=cosines,
    )


def orthogonalized(vector: np.ndarray, model_set: ModelSet,
                   names: list[str]) -> tuple[np.ndarray, dict[str, float]]:
    """``vector`` with the span of the named nuisance directions removed, renormalised;
    and each removed direction's cosine with the original vector."""
    if not names:
        return vector, {}
    nuisance = np.array([model_set.nuisance_directions[n] for n in names], np.float64)
    nuisance /= np.linalg.norm(nuisance, axis=1, keepdims=True)
    basis, _ = np.linalg.qr(nuisance.T)  # orthonormal basis of their span, (w_dim, k)
    rest = vector - basis @ (basis.T @ vector)
    norm = np.linalg.norm(rest)
    if norm < 1e-6:
        raise DirectionError(f"the target direction lies within the span of {', '.join(names)}: "
                             "nothing is left after removing them")
    cosines = {n: float(vector @ d) for n, d in zip(names, nuisance, strict=True)}
    return rest / norm, cosines


def _generator_versions(model_set: ModelSet) -> list[str]:
    return [model_set.models[k].version_id for k in ("mapping", "synthesis")]


def _vector_hash(vector: list[float]) -> str:
    return hashlib.sha256(np.asarray(vector, np.float64).tobytes()).hexdigest()[:16]
