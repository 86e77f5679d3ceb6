"""The explanation pipeline as stage functions that pass artifact-store keys.

``store_input -> encode -> ensure_direction -> traverse -> render -> write_manifest``:
each stage reads what it needs from the store by key and returns the key of the record
it wrote, so the same functions run inline here (:class:`Explainer`) or as separate
tasks on separate workers. A job's artifacts lie under ``jobs/<job id>/``; its
``manifest.json`` is written last, and a failed job leaves no artifact behind. Each stage
is timed in the metric ``styleprobe_stage_duration_seconds`` (``traverse`` as ``decode``,
``store_input`` and ``write_manifest`` as ``store``).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from styleprobe.backends.base import ModelBackend
from styleprobe.explain import render as draw
from styleprobe.explain.artifacts import get_array, get_json, job_key, put_array, put_json
from styleprobe.explain.direction import (
    ProbeSettings,
    check_nuisance_names,
    ensure_direction,
    load_direction,
)
from styleprobe.explain.inputs import ImageSource, ModelInput, from_tensor, load_input, to_tensor
from styleprobe.explain.lambdas import DEFAULT_LAMBDAS, parse_lambdas
from styleprobe.explain.quality import Quality, assess_reconstruction
from styleprobe.explain.result import (
    DirectionInfo,
    ExplanationResult,
    FlipInfo,
    InputInfo,
)
from styleprobe.explain.scores import predicted, target_probability
from styleprobe.explain.traverse import Flip, decode_frames, find_flip, search_direction
from styleprobe.metrics import stage_timer
from styleprobe.storage.base import ArtifactStore

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ExplainOptions:
    """Settings of one explanation beyond the input, target and λ grid."""

    probe: ProbeSettings = field(default_factory=ProbeSettings)
    orthogonalize: tuple[str, ...] = ()
    search_rounds: int = 3  # batched k-section calls of the counterfactual search
    search_points: int = 8  # λ values per search call


# --- stages ---------------------------------------------------------------------------------

@stage_timer("store")
def store_input(store: ArtifactStore, job_id: str, model_input: ModelInput) -> str:
    """Store the preprocessed input; the key of its record ``input.json``."""
    image_key = put_array(store, job_key(job_id, "input.npy"), model_input.image)
    return put_json(store, job_key(job_id, "input.json"), {
        "sha256": model_input.sha256, "description": model_input.description,
        "image": image_key})


@stage_timer("encode")
def encode(backend: ModelBackend, store: ArtifactStore, job_id: str, input_key: str,
           target: str) -> str:
    """``w = E(x)``, ``G(w)``, ``f(x)``, ``f(G(w))`` and the quality verdict; the key of
    the record ``encoding.json``."""
    model_set = backend.model_set
    prep = model_set.preprocessing
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    image = get_array(store, get_json(store, input_key)["image"])
    x = to_tensor(image[None], prep)
    w = backend.encoder(x)
    reconstruction, logits_rec = backend.decode_and_classify(w)
    p_input = float(target_probability(backend.classifier(x), class_index)[0])
    p_rec = float(target_probability(logits_rec, class_index)[0])
    recon = from_tensor(reconstruction, prep)[0]
    quality = assess_reconstruction(image, recon, bool(predicted(p_input, threshold)),
                                    bool(predicted(p_rec, threshold)), model_set.quality)
    return put_json(store, job_key(job_id, "encoding.json"), {
        "model_set": model_set.name,
        "models": {kind: entry.version_id for kind, entry in model_set.models.items()},
        "class_names": model_set.classifier.class_names,
        "target": target, "threshold": threshold,
        "latent": put_array(store, job_key(job_id, "latent.npy"), w[0]),
        "reconstruction": put_array(store, job_key(job_id, "reconstruction.npy"), recon),
        "prediction_input": p_input, "prediction_reconstruction": p_rec,
        "quality": asdict(quality),
    })


@stage_timer("decode")
def traverse(backend: ModelBackend, store: ArtifactStore, job_id: str, encoding_key: str,
             direction_key: str, lambdas: str, search_rounds: int = 3,
             search_points: int = 8) -> str:
    """Decode and classify the λ grid in one batch and search the flip; the key of the
    record ``traversal.json``."""
    prep = backend.model_set.preprocessing
    encoding = get_json(store, encoding_key)
    direction = load_direction(store, direction_key)
    w = get_array(store, encoding["latent"])
    alpha = direction.array()
    grid = decode_frames(backend, w, alpha, parse_lambdas(lambdas).values(),
                         direction.class_index)
    base = encoding["prediction_reconstruction"]
    flip = find_flip(backend, w, alpha, direction.class_index, direction.threshold, base, grid,
                     rounds=search_rounds, points=search_points)
    record: dict[str, Any] = {
        "lambdas": grid.lambdas.tolist(),
        "probabilities": grid.probabilities.tolist(),
        "frames": put_array(store, job_key(job_id, "frames.npy"),
                            from_tensor(grid.images, prep)),
        "flip": _flip_record(flip, search_direction(base, direction.threshold), grid.lambdas),
    }
    if flip is not None:
        record["flip_frame"] = put_array(store, job_key(job_id, "flip_frame.npy"),
                                         from_tensor(flip.image[None], prep)[0])
    return put_json(store, job_key(job_id, "traversal.json"), record)


def _flip_record(flip: Flip | None, sign: float, lambdas: np.ndarray) -> dict[str, Any]:
    side = "negative" if sign < 0 else "positive"
    limit = float(min(lambdas.min(), 0.0) if sign < 0 else max(lambdas.max(), 0.0))
    if flip is None:
        return asdict(FlipInfo(found=False, side=side, limit=limit))
    return asdict(FlipInfo(found=True, side=side, limit=limit, at_lambda=flip.lambda_,
                           probability=flip.probability, bracket=list(flip.bracket)))


def assemble(store: ArtifactStore, job_id: str, input_key: str, encoding_key: str,
             direction_key: str, traversal_key: str,
             outputs: dict[str, str] | None = None) -> ExplanationResult:
    """The typed result from the stage records."""
    record_in = get_json(store, input_key)
    encoding = get_json(store, encoding_key)
    direction = load_direction(store, direction_key)
    traversal = get_json(store, traversal_key)
    return ExplanationResult(
        job_id=job_id, model_set=encoding["model_set"], target=encoding["target"],
        class_names=encoding["class_names"], threshold=encoding["threshold"],
        input=InputInfo(sha256=record_in["sha256"], description=record_in["description"]),
        models=encoding["models"],
        direction=DirectionInfo(
            key=direction.key, auc=direction.auc, accuracy=direction.accuracy,
            auc_unconstrained=direction.auc_unconstrained, samples=direction.samples,
            positive_share=direction.positive_share, latent_std=direction.latent_std,
            probe=direction.probe, orthogonalized_against=direction.orthogonalized_against),
        lambdas=traversal["lambdas"], probabilities=traversal["probabilities"],
        prediction_input=encoding["prediction_input"],
        prediction_reconstruction=encoding["prediction_reconstruction"],
        flip=FlipInfo(**traversal["flip"]), quality=Quality(**encoding["quality"]),
        outputs=dict(outputs or {}),
    )


@stage_timer("render")
def render(store: ArtifactStore, job_id: str, input_key: str, encoding_key: str,
           direction_key: str, traversal_key: str) -> dict[str, str]:
    """Write frames, animation, strip, plot, difference maps and the HTML report; their
    keys by name."""
    result = assemble(store, job_id, input_key, encoding_key, direction_key, traversal_key)
    encoding, traversal = get_json(store, encoding_key), get_json(store, traversal_key)
    frames = get_array(store, traversal["frames"])
    reconstruction = get_array(store, encoding["reconstruction"])
    image = get_array(store, get_json(store, input_key)["image"])
    warning = f"UNRELIABLE: {'; '.join(result.quality.reasons)}" if result.unreliable else None
    lambdas, probs = result.lambdas, result.probabilities
    maps, scale = draw.difference_maps(frames, reconstruction)
    images = {
        "input": draw.png(image),
        "reconstruction": draw.png(reconstruction),
        "animation": draw.animation(frames),
        "strip": draw.strip(frames, lambdas, probs, result.target, result.threshold, warning),
        "plot": draw.probability_plot(lambdas, probs, result.target, result.threshold,
                                      result.flip.at_lambda, result.prediction_input, warning),
        "differences": draw.strip(maps, lambdas, probs, result.target, result.threshold,
                                  f"frame - reconstruction, red +{scale:.3f} .. blue "
                                  f"-{scale:.3f}" + (f"; {warning}" if warning else "")),
    }
    if "flip_frame" in traversal:
        images["flip_frame"] = draw.png(get_array(store, traversal["flip_frame"]))
    names = {"input": "input.png", "reconstruction": "reconstruction.png",
             "animation": "traversal.gif", "strip": "strip.png", "plot": "probability.png",
             "differences": "differences.png", "flip_frame": "flip_frame.png"}
    outputs = {}
    for name, data in images.items():
        key = job_key(job_id, names[name])
        store.put(key, data, "image/gif" if name == "animation" else "image/png")
        outputs[name] = key
    for i, (frame, diff) in enumerate(zip(frames, maps, strict=True)):
        outputs[f"frame_{i:03d}"] = job_key(job_id, f"frames/frame_{i:03d}.png")
        store.put(outputs[f"frame_{i:03d}"], draw.png(frame), "image/png")
        outputs[f"difference_{i:03d}"] = job_key(job_id, f"differences/difference_{i:03d}.png")
        store.put(outputs[f"difference_{i:03d}"], draw.png(diff), "image/png")
    outputs["report"] = job_key(job_id, "report.html")
    store.put(outputs["report"], draw.report_html(result, images).encode(), "text/html")
    return outputs


@stage_timer("store")
def write_manifest(store: ArtifactStore, job_id: str, input_key: str, encoding_key: str,
                   direction_key: str, traversal_key: str, outputs: dict[str, str]) -> str:
    """Write ``manifest.json`` (the last artifact of a job); its key."""
    result = assemble(store, job_id, input_key, encoding_key, direction_key, traversal_key,
                      outputs={**outputs, "manifest": job_key(job_id, "manifest.json")})
    store.put(result.outputs["manifest"], result.to_json().encode(), "application/json")
    return result.outputs["manifest"]


def delete_job(store: ArtifactStore, job_id: str) -> None:
    """Remove every artifact of a job (used when it fails)."""
    for key in store.list(f"jobs/{job_id}/"):
        store.delete(key)


# --- inline runner ---------------------------------------------------------------------------

class Explainer:
    """Runs the stages inline, in this process: the library API and the embedded mode."""

    def __init__(self, backend: ModelBackend, store: ArtifactStore,
                 progress: Progress | None = None) -> None:
        self.backend, self.store = backend, store
        self.progress = progress or (lambda stage, fraction: None)

    def explain(self, image: ImageSource, target: str | None = None,
                lambdas: str = DEFAULT_LAMBDAS, options: ExplainOptions | None = None,
                job_id: str | None = None, filename: str | None = None) -> ExplanationResult:
        """Explain the classifier's prediction of ``target`` on ``image``.

        Everything is checked before anything is written; on any failure the job's
        artifacts are removed (a probed direction, complete in itself, is kept).
        """
        options = options or ExplainOptions()
        model_set = self.backend.model_set
        target = target or model_set.default_target
        model_set.classifier.class_index(target)
        parse_lambdas(lambdas)
        orthogonalize = check_nuisance_names(model_set, options.orthogonalize)
        if job_id is not None and not JOB_ID.fullmatch(job_id):
            raise ValueError(f"job id {job_id!r} must be 1-128 letters, digits, '_', '.' or "
                             "'-', starting with a letter or digit")
        model_input = load_input(image, model_set.preprocessing, filename)
        job_id = job_id or uuid.uuid4().hex[:12]
        try:
            return self._run(model_input, target, lambdas, options, orthogonalize, job_id)
        except BaseException:
            delete_job(self.store, job_id)
            raise

    def _run(self, model_input: ModelInput, target: str, lambdas: str, options: ExplainOptions,
             orthogonalize: list[str], job_id: str) -> ExplanationResult:
        step = self.progress
        step("input", 0.0)
        input_key = store_input(self.store, job_id, model_input)
        step("encode", 0.0)
        encoding_key = encode(self.backend, self.store, job_id, input_key, target)
        step("direction", 0.0)
        direction_key = ensure_direction(self.backend, self.store, target, options.probe,
                                         orthogonalize, step)
        step("traverse", 0.0)
        traversal_key = traverse(self.backend, self.store, job_id, encoding_key, direction_key,
                                 lambdas, options.search_rounds, options.search_points)
        step("render", 0.0)
        outputs = render(self.store, job_id, input_key, encoding_key, direction_key,
                         traversal_key)
        step("manifest", 0.0)
        manifest_key = write_manifest(self.store, job_id, input_key, encoding_key,
                                      direction_key, traversal_key, outputs)
        step("manifest", 1.0)
        result = ExplanationResult.from_json(self.store.get(manifest_key))
        log.info("explained", extra={"job_id": job_id, "unreliable": result.unreliable})
        return result
