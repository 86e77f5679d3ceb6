"""Attribute discovery in the generator's StyleSpace (AttFind, after StylEx, Lang et al. 2021).

One probed direction in W mixes everything the classifier reacts to. StyleSpace — every
synthesis layer's per-channel modulation, exported as the model set's ``styles`` (w ->
styles) and ``stylesynthesis`` (styles -> image) entry points — is far more disentangled:
single channels tend to move single properties of the image. AttFind ranks those channels
by their effect on the classifier and shows the top ones one by one.

The variant implemented here (documented, as StylEx's code was never released):

1. ``samples`` latents ``w_i = mapping(z_i)`` (seeded); their styles ``s_i``; each
   channel's spread ``σ_c`` over :data:`STATS_SAMPLES` further latents.
2. Candidates are the channels of the convolution layers (``conv0``/``conv1``); the
   ``toRGB`` styles, which scale whole colour planes, are left out as in StyleSpace
   analysis (Wu et al. 2021).
3. Every candidate is moved by ``±shift·σ_c`` in every sample, decoded and classified: the
   change of the target's log-odds, up and down (one batched pass, 2·samples·candidates
   frames).
4. Greedy selection: each channel's orientation is the sign of its mean centred slope
   (``+λ`` raises the target, like the direction's). At each step the channel whose move
   *towards the other class* (down for images called the target, up for the rest) changes
   the log-odds most on average over the images not yet flipped is taken, and the images
   it flips leave the pool (all come back when none is left) — AttFind's selection, on
   effects measured once instead of re-decoded at every step.

The discovered attributes of a model set, target and settings are stored once under
``attributes/<sha256>.json`` like directions are, ranked at most once across concurrent
jobs (the workers' single-flight lock, as for directions), and reused. For an input image each
attribute gets its own traversal (λ in units of the channel's σ, the job's λ grid), the λ
at which the prediction flips (interpolated on the grid, towards the other class) and its
effect size (the change of the target probability over the traversal).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from styleprobe.backends.base import ModelBackend
from styleprobe.explain import render as draw
from styleprobe.explain.artifacts import get_array, get_json, job_key, put_array, put_json
from styleprobe.explain.inputs import from_model_layout
from styleprobe.explain.result import AttributeInfo
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import AttributeSettings, JobSpecError
from styleprobe.modelset import ModelSet
from styleprobe.storage.base import ArtifactStore

log = logging.getLogger(__name__)
STATS_SAMPLES = 2000  # latents each channel's σ is measured over (styles only: cheap)
STATS_SEED_OFFSET = 1  # the σ latents are seeded apart from the ranked samples
RANK_CHUNK = 256  # frames decoded per engine-level step while ranking
MIN_SIGMA = 1e-6  # channels that never move are no candidates
EPS = 1e-6
CONV_LAYERS = ("conv0", "conv1")
Progress = Callable[[float], None]
SingleFlight = Callable[[str], AbstractContextManager[Callable[[], None]]]


@dataclass
class Attribute:
    """One discovered attribute: a StyleSpace channel, oriented so that +λ raises the
    target, and what it did over the ranked samples."""

    rank: int
    channel: int  # index into the StyleSpace vector
    layer: str  # ``b<res>.conv0|conv1``
    layer_channel: int  # index within its layer
    sign: float  # +1 or -1: the style change that raises the target is sign·λ·σ
    sigma: float  # the channel's spread over generated images: one λ unit
    effect_logit: float  # mean log-odds change towards the other class, over the pool
    mean_slope: float  # mean log-odds change per ``shift`` along +λ, over all samples
    flip_share: float  # share of the ranked samples one move of ``shift`` flips

    @property
    def name(self) -> str:
        return f"{self.layer}#{self.layer_channel}"


@dataclass
class Discovery:
    """The attributes of a model set for one target and settings (stored once)."""

    key: str
    target: str
    class_index: int
    threshold: float
    settings: dict[str, Any]
    candidates: int
    samples: int
    attributes: list[Attribute]
    generator: list[str]
    classifier: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Discovery:
        raw = dict(raw)
        raw["attributes"] = [Attribute(**a) for a in raw["attributes"]]
        return cls(**raw)


@dataclass
class AttributeTraversal:
    """One attribute moved on one image: its frames' target probabilities, flip and effect."""

    attribute: Attribute
    lambdas: np.ndarray  # (L,)
    probabilities: np.ndarray  # (L,)
    images: np.ndarray  # (L, C, R, R), model layout
    flip_lambda: float | None  # where the prediction flips towards the other class
    effect: float  # P(target) at the largest λ minus at the smallest


# --- ranking -----------------------------------------------------------------------------------

def log_odds(probability: np.ndarray) -> np.ndarray:
    """The target's log-odds ``log p / (1 - p)``, clipped away from 0 and 1."""
    p = np.clip(np.asarray(probability, np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def candidate_channels(model_set: ModelSet, sigma: np.ndarray) -> np.ndarray:
    """Indices of the convolution layers' style channels that move at all."""
    chosen: list[int] = []
    start = 0
    for layer in model_set.style_layers:
        if layer.name.rsplit(".", 1)[-1] in CONV_LAYERS:
            chosen.extend(range(start, start + layer.channels))
        start += layer.channels
    indices = np.asarray(chosen, np.int64)
    return indices[sigma[indices] > MIN_SIGMA]


def channel_name(model_set: ModelSet, channel: int) -> tuple[str, int]:
    """The layer of a StyleSpace index and the index within that layer."""
    start = 0
    for layer in model_set.style_layers:
        if channel < start + layer.channels:
            return layer.name, channel - start
        start += layer.channels
    raise IndexError(f"style channel {channel} is beyond the {start} of the StyleSpace")


def greedy_select(up: np.ndarray, down: np.ndarray, base: np.ndarray, threshold: float,
                  top: int) -> list[dict[str, float | int]]:
    """AttFind's greedy selection over measured effects.

    ``up``/``down`` ``(N, C)``: change of the target's log-odds when candidate ``c`` moves
    up/down in sample ``i``; ``base`` ``(N,)``: the samples' log-odds; ``threshold``: the
    log-odds at which the prediction changes. Returns up to ``top`` picks (candidate
    column, orientation, mean effect over the pool, mean slope, flip share), best first.
    """
    n, c = up.shape
    slope = (up - down) / 2.0
    sign = np.where(slope.mean(axis=0) >= 0, 1.0, -1.0)  # +λ raises the target
    raises, lowers = np.where(sign > 0, up, down), np.where(sign > 0, down, up)
    called = base >= threshold
    # each image's move towards the other class, and whether it gets there
    toward = np.where(called[:, None], -lowers, raises)
    flips = np.where(called[:, None], base[:, None] + lowers < threshold,
                     base[:, None] + raises >= threshold)
    pool = np.ones(n, bool)
    taken: list[dict[str, float | int]] = []
    free = np.ones(c, bool)
    for _ in range(min(top, c)):
        if not pool.any():
            pool[:] = True
        score = np.where(free, toward[pool].mean(axis=0), -np.inf)
        best = int(np.argmax(score))
        taken.append({"column": best, "sign": float(sign[best]),
                      "effect_logit": float(score[best]),
                      "mean_slope": float(sign[best] * slope[:, best].mean()),
                      "flip_share": float(flips[:, best].mean())})
        free[best] = False
        pool &= ~flips[:, best]
    return taken


def attributes_key(model_set: ModelSet, target: str, settings: AttributeSettings) -> str:
    """``attributes/<sha256>.json``: the hash of everything the discovery depends on."""
    identity = {
        "generator": _generator_versions(model_set),
        "classifier": model_set.models["classifier"].version_id,
        "target": target, "threshold": model_set.classifier.threshold,
        "settings": asdict(settings), "stats_samples": STATS_SAMPLES,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"attributes/{digest}.json"


def style_statistics(backend: ModelBackend, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every style channel's mean and spread over :data:`STATS_SAMPLES` generated latents."""
    z = np.random.default_rng(seed + STATS_SEED_OFFSET).standard_normal(
        (STATS_SAMPLES, backend.model_set.z_dim)).astype(np.float32)
    styles = backend.styles(backend.mapping(z)).astype(np.float64)
    return styles.mean(axis=0), styles.std(axis=0)


def discover(backend: ModelBackend, target: str, settings: AttributeSettings, key: str = "",
             progress: Progress | None = None) -> Discovery:
    """Rank the StyleSpace channels of ``backend``'s generator for ``target`` (no caching)."""
    model_set = backend.model_set
    if not model_set.has_stylespace:
        raise JobSpecError(f"model set {model_set.name!r} exports no StyleSpace", "attributes")
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    _, sigma = style_statistics(backend, settings.seed)
    candidates = candidate_channels(model_set, sigma)
    z = np.random.default_rng(settings.seed).standard_normal(
        (settings.samples, model_set.z_dim)).astype(np.float32)
    styles = backend.styles(backend.mapping(z))
    base = log_odds(_probabilities(backend, styles, class_index))
    n, c = len(styles), len(candidates)
    # frame (candidate j, side d, sample i) at row (j * 2 + d) * n + i
    logits = np.empty(2 * n * c)
    step = max(1, RANK_CHUNK // (2 * n))
    for start in range(0, c, step):
        chunk = candidates[start:start + step]
        frames = np.repeat(styles[None, None], len(chunk), axis=0).repeat(2, axis=1)
        moves = settings.shift * sigma[chunk].astype(np.float32)
        rows = np.arange(len(chunk))
        frames[rows, 0, :, chunk] += moves[:, None]
        frames[rows, 1, :, chunk] -= moves[:, None]
        probabilities = _probabilities(backend, frames.reshape(-1, styles.shape[1]), class_index)
        logits[start * 2 * n:(start + len(chunk)) * 2 * n] = log_odds(probabilities)
        if progress:
            progress(min(1.0, (start + len(chunk)) / c))
    moved = logits.reshape(c, 2, n)
    up, down = (moved[:, 0] - base).T, (moved[:, 1] - base).T
    picks = greedy_select(up, down, base, float(log_odds(np.array(threshold))), settings.top)
    attributes = []
    for rank, pick in enumerate(picks, 1):
        channel = int(candidates[int(pick["column"])])
        layer, index = channel_name(model_set, channel)
        attributes.append(Attribute(
            rank=rank, channel=channel, layer=layer, layer_channel=index,
            sign=float(pick["sign"]), sigma=float(sigma[channel]),
            effect_logit=float(pick["effect_logit"]), mean_slope=float(pick["mean_slope"]),
            flip_share=float(pick["flip_share"])))
    return Discovery(key=key, target=target, class_index=class_index, threshold=threshold,
                     settings=asdict(settings), candidates=c, samples=n,
                     attributes=attributes, generator=_generator_versions(model_set),
                     classifier=model_set.models["classifier"].version_id)


def ensure_attributes(backend: ModelBackend, store: ArtifactStore, target: str,
                      settings: AttributeSettings, progress: Progress | None = None) -> str:
    """Key of the stored discovery for these settings, ranking only if absent."""
    key = attributes_key(backend.model_set, target, settings)
    if store.exists(key):
        log.info("attributes cached", extra={"key": key})
        return key
    discovery = discover(backend, target, settings, key, progress)
    put_json(store, key, discovery.to_dict())
    log.info("attributes discovered", extra={"key": key, "candidates": discovery.candidates})
    return key


def load_discovery(store: ArtifactStore, key: str) -> Discovery:
    return Discovery.from_dict(get_json(store, key))


# --- traversals of one image -------------------------------------------------------------------

def traverse_attributes(backend: ModelBackend, w: np.ndarray, discovery: Discovery,
                        lambdas: np.ndarray) -> list[AttributeTraversal]:
    """Move each attribute of ``discovery`` over ``lambdas`` (units of its σ) from the
    latent ``w`` (w_dim,): all frames decoded and classified in one batch."""
    lambdas = np.sort(np.asarray(lambdas, np.float64))
    base = backend.styles(np.asarray(w, np.float32)[None])[0]
    frames = np.repeat(base[None, None], len(discovery.attributes), axis=0).repeat(
        len(lambdas), axis=1)
    for i, a in enumerate(discovery.attributes):
        frames[i, :, a.channel] += (a.sign * a.sigma * lambdas).astype(np.float32)
    images = backend.style_synthesis(frames.reshape(-1, base.shape[0]))
    probabilities = target_probability(backend.classifier(images), discovery.class_index)
    images = images.reshape(len(discovery.attributes), len(lambdas), *images.shape[1:])
    probabilities = probabilities.reshape(len(discovery.attributes), len(lambdas))
    p0 = float(target_probability(backend.classifier(backend.style_synthesis(base[None])),
                                  discovery.class_index)[0])
    return [AttributeTraversal(a, lambdas, p, frames_of, flip_lambda(lambdas, p, p0,
                                                                     discovery.threshold),
                               float(p[-1] - p[0]))
            for a, p, frames_of in zip(discovery.attributes, probabilities, images, strict=True)]


def flip_lambda(lambdas: np.ndarray, probabilities: np.ndarray, base: float,
                threshold: float) -> float | None:
    """The λ nearest 0 on the side towards the other class (negative λ for an image called
    the target) where the probability crosses ``threshold``, linearly interpolated between
    grid points; None if it does not within the grid."""
    called = base >= threshold
    side = lambdas < 0 if called else lambdas > 0
    order = np.argsort(np.abs(lambdas[side]))
    xs = np.concatenate([[0.0], lambdas[side][order]])
    ps = np.concatenate([[base], probabilities[side][order]])
    for k in range(1, len(xs)):
        if (ps[k] < threshold) if called else (ps[k] >= threshold):
            t = (threshold - ps[k - 1]) / (ps[k] - ps[k - 1]) if ps[k] != ps[k - 1] else 1.0
            return float(xs[k - 1] + np.clip(t, 0.0, 1.0) * (xs[k] - xs[k - 1]))
    return None


def attributes_record(store: ArtifactStore, job_id: str, encoding: dict[str, Any],
                      discovery: Discovery, traversals: list[AttributeTraversal],
                      preprocessing: Any) -> str:
    """Write one job's attribute traversals (frames as arrays); the key of
    ``attributes.json``."""
    items = []
    for t in traversals:
        name = f"attribute_{t.attribute.rank:02d}"
        items.append({
            "attribute": asdict(t.attribute), "name": t.attribute.name,
            "lambdas": t.lambdas.tolist(), "probabilities": t.probabilities.tolist(),
            "flip_lambda": t.flip_lambda, "effect": t.effect,
            "frames": put_array(store, job_key(job_id, f"{name}.npy"),
                                from_model_layout(t.images, preprocessing)),
        })
    return put_json(store, job_key(job_id, "attributes.json"), {
        "discovery": discovery.key, "target": discovery.target,
        "threshold": discovery.threshold, "samples": discovery.samples,
        "candidates": discovery.candidates, "settings": discovery.settings,
        "prediction_reconstruction": encoding["prediction_reconstruction"],
        "attributes": items})


def shared_discovery(backend: ModelBackend, store: ArtifactStore, target: str,
                     settings: AttributeSettings, single_flight: SingleFlight,
                     progress: Progress | None = None) -> str:
    """Key of the stored discovery, ranked at most once across concurrent jobs: behind
    ``single_flight(key)`` (the workers' Redis lock, whose lease each ranking step renews),
    whoever waited for the lock finds it stored."""
    key = attributes_key(backend.model_set, target, settings)
    if store.exists(key):
        return key
    with single_flight(key) as renew:

        def step(fraction: float) -> None:
            renew()
            if progress:
                progress(fraction)

        return ensure_attributes(backend, store, target, settings, step)


def run_attributes(backend: ModelBackend, store: ArtifactStore, job_id: str,
                   encoding_key: str, settings: AttributeSettings, lambdas: np.ndarray,
                   single_flight: SingleFlight, progress: Progress | None = None) -> str:
    """The job's attributes: the stored discovery (ranked once, see
    :func:`shared_discovery`), then this image's traversals; the key of the job's
    ``attributes.json``."""
    encoding = get_json(store, encoding_key)
    key = shared_discovery(backend, store, encoding["target"], settings, single_flight,
                           progress)
    discovery = load_discovery(store, key)
    w = get_array(store, encoding["latent"])
    traversals = traverse_attributes(backend, w, discovery, lambdas)
    return attributes_record(store, job_id, encoding, discovery, traversals,
                             backend.model_set.preprocessing)


def _probabilities(backend: ModelBackend, styles: np.ndarray, class_index: int) -> np.ndarray:
    images = backend.style_synthesis(np.ascontiguousarray(styles, np.float32))
    return target_probability(backend.classifier(images), class_index)


def _generator_versions(model_set: ModelSet) -> list[str]:
    return [model_set.models[k].version_id for k in ("mapping", "styles", "stylesynthesis")]


# --- results and pictures ----------------------------------------------------------------------

def attribute_infos(record: dict[str, Any]) -> list[AttributeInfo]:
    """The typed attributes of a job's ``attributes.json`` (for its manifest)."""
    return [AttributeInfo(
        rank=item["attribute"]["rank"], name=item["name"], channel=item["attribute"]["channel"],
        sign=item["attribute"]["sign"], sigma=item["attribute"]["sigma"],
        ranking_effect=item["attribute"]["effect_logit"],
        ranking_flip_share=item["attribute"]["flip_share"],
        lambdas=item["lambdas"], probabilities=item["probabilities"],
        flip_lambda=item["flip_lambda"], effect=item["effect"])
        for item in record["attributes"]]


def attribute_strips(store: ArtifactStore, record: dict[str, Any], target: str,
                     threshold: float, warning: str | None) -> dict[str, bytes]:
    """One annotated strip per attribute (PNG bytes), named ``attribute_<rank>``;
    ``warning`` (an unreliable reconstruction) is printed on each."""
    return {f"attribute_{item['attribute']['rank']:02d}": draw.strip(
                get_array(store, item["frames"]), item["lambdas"], item["probabilities"],
                target, threshold, warning)
            for item in record["attributes"]}
