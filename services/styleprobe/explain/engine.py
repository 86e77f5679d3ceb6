"""The explanation pipeline: the stages of one job, written once, passing store keys.

A job's input is stored when the job is submitted (:func:`store_input`); then the stages
of :data:`STAGES` run in order — ``encode``, ``direction``, ``traverse``, ``render``,
``manifest`` — whether inline in this process (:class:`Explainer`) or as a chain of
Celery tasks (:mod:`styleprobe.worker.tasks`), which walk the same list. Each stage reads
the records it needs from the artifact store by key (:class:`JobKeys`) and adds the key
of the record it wrote. A stage's name is its name everywhere: in progress events, Celery
task names and the ``stage`` label of ``styleprobe_stage_duration_seconds``. The stages
that call models run first (``Stage.uses_models``); the rest only draw and write.

A job's artifacts lie under ``jobs/<job id>/``; its ``manifest.json`` is written last,
and a failed job leaves no artifact behind. Stages are idempotent: one whose record is
already stored (a task delivered twice) is not redone.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from styleprobe.backends.base import ModelBackend
from styleprobe.explain import render as draw
from styleprobe.explain.artifacts import get_array, get_json, job_key, put_array, put_json
from styleprobe.explain.attributes import attribute_infos, attribute_strips, run_attributes
from styleprobe.explain.direction import (
    GeneratorCoverageError,
    direction_key,
    ensure_direction,
    load_direction,
)
from styleprobe.explain.domain import domain_reasons
from styleprobe.explain.inputs import (
    ImageSource,
    ModelInput,
    from_model_layout,
    load_input,
    to_model_layout,
)
from styleprobe.explain.quality import Quality, assess_reconstruction
from styleprobe.explain.result import (
    DirectionInfo,
    ExplanationResult,
    FlipInfo,
    InputInfo,
)
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import JobSpec, JobSpecError, SearchSettings
from styleprobe.explain.traverse import Flip, decode_grids, find_flips, search_direction
from styleprobe.metrics import stage_timer
from styleprobe.storage.base import ArtifactStore

log = logging.getLogger(__name__)
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
Progress = Callable[[str, float], None]
DIRECTION_PROBED, DIRECTION_STORED = "direction probed", "direction found stored"  # job notes


@dataclass(frozen=True)
class JobKeys:
    """The keys of one job's records, filled in stage by stage."""

    input: str
    encoding: str = ""
    direction: str = ""
    traversal: str = ""
    attributes: str = ""  # the job's attribute traversals, when its spec asks for them
    outputs: dict[str, str] = field(default_factory=dict)  # rendered artifacts by name
    manifest: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobKeys:
        return cls(**raw)


# --- stages ---------------------------------------------------------------------------------

@stage_timer("input")
def store_input(store: ArtifactStore, job_id: str, model_input: ModelInput) -> str:
    """Store the preprocessed input; the key of its record ``input.json``."""
    image_key = put_array(store, job_key(job_id, "input.npy"), model_input.image)
    return put_json(store, job_key(job_id, "input.json"), {
        "sha256": model_input.sha256, "description": model_input.description,
        "image": image_key})


def encode(backend: ModelBackend, store: ArtifactStore, job_id: str, input_key: str,
           target: str) -> str:
    """``w = E(x)``, ``G(w)``, ``f(x)``, ``f(G(w))`` and the quality verdict; the key of
    the record ``encoding.json``."""
    return encode_many(backend, store, [job_id], [input_key], target)[0]


def encode_many(backend: ModelBackend, store: ArtifactStore, job_ids: Sequence[str],
                input_keys: Sequence[str], target: str) -> list[str]:
    """:func:`encode` for several jobs at once: one encoder call, one decode-and-classify
    call and one classifier call for all their images; the keys of their records."""
    model_set = backend.model_set
    prep = model_set.preprocessing
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    stored = [get_json(store, key) for key in input_keys]
    images = [get_array(store, record["image"]) for record in stored]
    x = to_model_layout(np.stack(images), prep)
    w = backend.encoder(x)
    reconstructions, logits_rec = backend.decode_and_classify(w)
    p_inputs = target_probability(backend.classifier(x), class_index)
    p_recs = target_probability(logits_rec, class_index)
    recons = from_model_layout(reconstructions, prep)
    keys = []
    for i, (job_id, image) in enumerate(zip(job_ids, images, strict=True)):
        p_input, p_rec = float(p_inputs[i]), float(p_recs[i])
        quality = assess_reconstruction(
            image, recons[i], p_input, p_rec, threshold, model_set.quality,
            domain_reasons(model_set.domain, image, stored[i]["description"]))
        keys.append(put_json(store, job_key(job_id, "encoding.json"), {
            "model_set": model_set.name,
            "models": {kind: entry.version_id for kind, entry in model_set.models.items()},
            "class_names": model_set.classifier.class_names,
            "target": target, "threshold": threshold,
            "latent": put_array(store, job_key(job_id, "latent.npy"), w[i]),
            "reconstruction": put_array(store, job_key(job_id, "reconstruction.npy"),
                                        recons[i]),
            "prediction_input": p_input, "prediction_reconstruction": p_rec,
            "quality": asdict(quality),
        }))
    return keys


def traverse(backend: ModelBackend, store: ArtifactStore, job_id: str, encoding_key: str,
             direction_key: str, lambdas: np.ndarray, search: SearchSettings) -> str:
    """Decode and classify the λ grid in one batch and search the flip; the key of the
    record ``traversal.json``."""
    return traverse_many(backend, store, [job_id], [encoding_key], direction_key, lambdas,
                         search)[0]


def traverse_many(backend: ModelBackend, store: ArtifactStore, job_ids: Sequence[str],
                  encoding_keys: Sequence[str], direction_key: str, lambdas: np.ndarray,
                  search: SearchSettings) -> list[str]:
    """:func:`traverse` for several jobs sharing a direction: every job's λ grid in one
    decode-and-classify call, and each round of the flip search for all of them in one
    call; the keys of their records."""
    prep = backend.model_set.preprocessing
    encodings = [get_json(store, key) for key in encoding_keys]
    direction = load_direction(store, direction_key)
    latents = np.stack([get_array(store, encoding["latent"]) for encoding in encodings])
    alpha = direction.array()
    grid = np.asarray(lambdas, np.float64)
    grids = decode_grids(backend, latents, alpha, np.tile(grid, (len(latents), 1)),
                         direction.class_index)
    bases = [encoding["prediction_reconstruction"] for encoding in encodings]
    flips = find_flips(backend, latents, alpha, direction.class_index, direction.threshold,
                       bases, grids, search)
    keys = []
    for job_id, frames, flip, base in zip(job_ids, grids, flips, bases, strict=True):
        record: dict[str, Any] = {
            "lambdas": frames.lambdas.tolist(),
            "probabilities": frames.probabilities.tolist(),
            "frames": put_array(store, job_key(job_id, "frames.npy"),
                                from_model_layout(frames.images, prep)),
            "flip": _flip_record(flip, search_direction(base, direction.threshold),
                                 frames.lambdas),
        }
        if flip is not None:
            record["flip_frame"] = put_array(store, job_key(job_id, "flip_frame.npy"),
                                             from_model_layout(flip.image[None], prep)[0])
        keys.append(put_json(store, job_key(job_id, "traversal.json"), record))
    return keys


def _flip_record(flip: Flip | None, sign: float, lambdas: np.ndarray) -> dict[str, Any]:
    side = "negative" if sign < 0 else "positive"
    limit = float(min(lambdas.min(), 0.0) if sign < 0 else max(lambdas.max(), 0.0))
    if flip is None:
        return asdict(FlipInfo(found=False, side=side, limit=limit))
    return asdict(FlipInfo(found=True, side=side, limit=limit, at_lambda=flip.lambda_,
                           probability=flip.probability, bracket=list(flip.bracket)))


def assemble(store: ArtifactStore, job_id: str, keys: JobKeys) -> ExplanationResult:
    """The typed result from the stage records (and the outputs rendered so far)."""
    record_in = get_json(store, keys.input)
    encoding = get_json(store, keys.encoding)
    direction = load_direction(store, keys.direction)
    traversal = get_json(store, keys.traversal)
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
        outputs=dict(keys.outputs),
        attributes=(attribute_infos(get_json(store, keys.attributes)) if keys.attributes
                    else []),
    )


RENDER_NAMES = {"input": "input.png", "reconstruction": "reconstruction.png",
                "animation": "traversal.gif", "strip": "strip.png", "plot": "probability.png",
                "differences": "differences.png", "flip_frame": "flip_frame.png"}
PUT_THREADS = 8  # rendered objects written to the store at once


def render(store: ArtifactStore, job_id: str, keys: JobKeys) -> dict[str, str]:
    """Write frames, animation, strip, plot, difference maps and the HTML report; their
    keys by name. Frames are converted once for every picture, and the objects are
    written to the store concurrently."""
    result = assemble(store, job_id, keys)
    encoding, traversal = get_json(store, keys.encoding), get_json(store, keys.traversal)
    frames = get_array(store, traversal["frames"])
    reconstruction = get_array(store, encoding["reconstruction"])
    image = get_array(store, get_json(store, keys.input)["image"])
    warning = f"UNRELIABLE: {'; '.join(result.quality.reasons)}" if result.unreliable else None
    lambdas, probs = result.lambdas, result.probabilities
    maps, scale = draw.difference_maps(frames, reconstruction)
    shown, shown_maps = draw.enlarge(frames), draw.enlarge(maps)
    images = {
        "input": draw.png(image),
        "reconstruction": draw.png(reconstruction),
        "animation": draw.animation(shown),
        "strip": draw.strip(shown, lambdas, probs, result.target, result.threshold, warning),
        "plot": draw.probability_plot(lambdas, probs, result.target, result.threshold,
                                      result.flip.at_lambda, result.prediction_input, warning),
        "differences": draw.strip(shown_maps, lambdas, probs, result.target, result.threshold,
                                  f"frame - reconstruction, red +{scale:.3f} .. blue "
                                  f"-{scale:.3f}" + (f"; {warning}" if warning else "")),
    }
    if "flip_frame" in traversal:
        images["flip_frame"] = draw.png(get_array(store, traversal["flip_frame"]))
    if keys.attributes:  # one strip per attribute, attribute_<rank>.png
        images |= attribute_strips(store, get_json(store, keys.attributes), result.target,
                                   result.threshold, warning)
    objects: dict[str, tuple[str, bytes, str]] = {
        name: (job_key(job_id, RENDER_NAMES.get(name, f"{name}.png")), data,
               "image/gif" if name == "animation" else "image/png")
        for name, data in images.items()}
    for i, (frame, diff) in enumerate(zip(shown, shown_maps, strict=True)):
        objects[f"frame_{i:03d}"] = (job_key(job_id, f"frames/frame_{i:03d}.png"),
                                     draw.png(frame), "image/png")
        objects[f"difference_{i:03d}"] = (
            job_key(job_id, f"differences/difference_{i:03d}.png"), draw.png(diff),
            "image/png")
    objects["report"] = (job_key(job_id, "report.html"),
                         draw.report_html(result, images).encode(), "text/html")
    with ThreadPoolExecutor(PUT_THREADS, thread_name_prefix="render-put") as pool:
        list(pool.map(lambda item: store.put(*item), objects.values()))
    return {name: key for name, (key, _, _) in objects.items()}


def write_manifest(store: ArtifactStore, job_id: str, keys: JobKeys) -> str:
    """Write ``manifest.json`` (the last artifact of a job); its key."""
    manifest = job_key(job_id, "manifest.json")
    result = assemble(store, job_id,
                      replace(keys, outputs={**keys.outputs, "manifest": manifest}))
    store.put(result.outputs["manifest"], result.to_json().encode(), "application/json")
    return result.outputs["manifest"]


def render_on_demand(store: ArtifactStore, job_id: str) -> ExplanationResult:
    """Draw the pictures of a finished job written without them (a cohort that renders
    nothing: :attr:`~styleprobe.cohort.ledger.CohortSpec.render`) from its stored
    records, and rewrite its manifest with their keys; its result (as it was, if it has
    its pictures already)."""
    manifest = job_key(job_id, "manifest.json")
    result = ExplanationResult.from_json(store.get(manifest))
    if "report" in result.outputs:
        return result
    keys = JobKeys(input=job_key(job_id, "input.json"),
                   encoding=job_key(job_id, "encoding.json"), direction=result.direction.key,
                   traversal=job_key(job_id, "traversal.json"))
    write_manifest(store, job_id, replace(keys, outputs=render(store, job_id, keys)))
    return ExplanationResult.from_json(store.get(manifest))


def case_pictures(store: ArtifactStore, job_id: str, farthest: int) -> dict[str, bytes]:
    """PNGs of the input, reconstruction and counterfactual (the flip frame, else frame
    ``farthest`` of the traversal) of a finished job, drawn from its stored arrays and not
    written: a cohort report's case of a cohort that renders nothing."""
    traversal = get_json(store, job_key(job_id, "traversal.json"))
    encoding = get_json(store, job_key(job_id, "encoding.json"))
    image = get_array(store, get_json(store, job_key(job_id, "input.json"))["image"])
    counterfactual = (get_array(store, traversal["flip_frame"]) if "flip_frame" in traversal
                      else get_array(store, traversal["frames"])[farthest])
    return {"input": draw.png(image),
            "reconstruction": draw.png(get_array(store, encoding["reconstruction"])),
            "counterfactual": draw.png(counterfactual)}


# --- the stage list ---------------------------------------------------------------------------

def no_lock(_key: str) -> AbstractContextManager[Callable[[], None]]:
    """A single-flight lock for one process: nothing to wait for, nothing to renew."""

    @contextmanager
    def held() -> Iterator[Callable[[], None]]:
        yield lambda: None
    return held()


@dataclass
class StageContext:
    """What a stage works with: the job, the store, the model set's backend (made on first
    use: stages without models never ask for it), a progress callback (fraction of the
    stage), a single-flight lock for shared work by key (it yields a function that renews
    the lock's lease) and a callback for notes on the job."""

    job_id: str
    spec: JobSpec
    store: ArtifactStore
    backend: Callable[[], ModelBackend]
    progress: Callable[[float], None] = lambda _fraction: None
    single_flight: Callable[[str], AbstractContextManager[Callable[[], None]]] = no_lock
    note: Callable[[str], None] = lambda _message: None


BatchRun = Callable[[Sequence[StageContext], Sequence[JobKeys]], list[JobKeys]]


@dataclass(frozen=True)
class Stage:
    """One step of a job: ``run(context, keys)`` returns the keys with its record added.
    A stage with ``batch`` runs several jobs of one spec at once (a cohort's chunk: each
    model call for all their images); without, :meth:`run_many` runs them one by one."""

    name: str
    uses_models: bool
    run: Callable[[StageContext, JobKeys], JobKeys]
    batch: BatchRun | None = None

    def run_many(self, contexts: Sequence[StageContext],
                 keys: Sequence[JobKeys]) -> list[JobKeys]:
        """The stage for several jobs of one spec; their keys, in order."""
        if self.batch is not None:
            return self.batch(contexts, keys)
        return [self.run(context, k) for context, k in zip(contexts, keys, strict=True)]


def shared_direction(context: StageContext) -> tuple[str, bool]:
    """The key of the stored direction of the job's spec, and whether this call probed it:
    probed at most once across concurrent jobs, behind the context's single-flight lock."""
    backend, spec, store = context.backend(), context.spec, context.store
    key = direction_key(backend.model_set, spec.target, spec.probe, list(spec.orthogonalize))
    if store.exists(key):
        return key, False
    with context.single_flight(key) as renew:
        probed = not store.exists(key)  # whoever waited for the lock finds it stored

        def probing(_stage: str, fraction: float) -> None:
            renew()
            context.progress(fraction)

        ensure_direction(backend, store, spec.target, spec.probe, spec.orthogonalize, probing)
    return key, probed


def _encode(context: StageContext, keys: JobKeys) -> JobKeys:
    return _encode_many([context], [keys])[0]


def _encode_many(contexts: Sequence[StageContext], keys: Sequence[JobKeys]) -> list[JobKeys]:
    done = [job_key(context.job_id, "encoding.json") for context in contexts]
    todo = [i for i, key in enumerate(done) if not contexts[i].store.exists(key)]
    if todo:
        first = contexts[0]
        encode_many(first.backend(), first.store, [contexts[i].job_id for i in todo],
                    [keys[i].input for i in todo], first.spec.target)
    return [replace(k, encoding=key) for k, key in zip(keys, done, strict=True)]


def _direction(context: StageContext, keys: JobKeys) -> JobKeys:
    try:
        key, probed = shared_direction(context)
    except GeneratorCoverageError as exc:  # the input's own verdict is still worth knowing
        quality = Quality(**get_json(context.store, keys.encoding)["quality"])
        verdict = ("unreliable: " + "; ".join(quality.reasons) if quality.unreliable
                   else "reliable")
        raise GeneratorCoverageError(f"{exc}. This image's reconstruction: {verdict} "
                                     f"(pixel MSE {quality.pixel_mse:.4f})") from exc
    context.note(DIRECTION_PROBED if probed else DIRECTION_STORED)
    return replace(keys, direction=key)


def _traverse(context: StageContext, keys: JobKeys) -> JobKeys:
    return _traverse_many([context], [keys])[0]


def _traverse_many(contexts: Sequence[StageContext],
                   keys: Sequence[JobKeys]) -> list[JobKeys]:
    done = [job_key(context.job_id, "traversal.json") for context in contexts]
    todo = [i for i, key in enumerate(done) if not contexts[i].store.exists(key)]
    if todo:
        first = contexts[0]
        if len({keys[i].direction for i in todo}) != 1:
            raise ValueError("jobs traversed together must share their direction")
        traverse_many(first.backend(), first.store, [contexts[i].job_id for i in todo],
                      [keys[i].encoding for i in todo], keys[todo[0]].direction,
                      first.spec.lambdas.values(), first.spec.search)
    return [replace(k, traversal=key) for k, key in zip(keys, done, strict=True)]


def _attributes(context: StageContext, keys: JobKeys) -> JobKeys:
    settings = context.spec.attributes
    if settings is None:
        return keys
    done = job_key(context.job_id, "attributes.json")
    if not context.store.exists(done):
        run_attributes(context.backend(), context.store, context.job_id, keys.encoding,
                       settings, context.spec.lambdas.values(), context.single_flight,
                       context.progress)
    return replace(keys, attributes=done)


def _render(context: StageContext, keys: JobKeys) -> JobKeys:
    return replace(keys, outputs=render(context.store, context.job_id, keys))


def _manifest(context: StageContext, keys: JobKeys) -> JobKeys:
    return replace(keys, manifest=write_manifest(context.store, context.job_id, keys))


STAGES: tuple[Stage, ...] = (
    Stage("encode", True, _encode, _encode_many),  # w = E(x), G(w), f(x), f(G(w)), verdict
    Stage("direction", True, _direction),  # the stored direction, probed once
    Stage("traverse", True, _traverse, _traverse_many),  # the λ grid decoded, flip search
    Stage("attributes", True, _attributes),  # StyleSpace attributes, when the spec asks
    Stage("render", False, _render),       # frames, animation, strip, plot, report
    Stage("manifest", False, _manifest),   # manifest.json, the job's last object
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)
MODEL_STAGES = tuple(stage for stage in STAGES if stage.uses_models)
OUTPUT_STAGES = tuple(stage for stage in STAGES if not stage.uses_models)
assert STAGES == MODEL_STAGES + OUTPUT_STAGES, "stages with models run first"


def run_stage(stage: Stage, context: StageContext, keys: JobKeys) -> JobKeys:
    """Run one stage, timed under its name."""
    with stage_timer(stage.name):
        return stage.run(context, keys)


def run_stages(stages: Sequence[Stage], context: StageContext, keys: JobKeys,
               progress: Progress | None = None) -> JobKeys:
    """Run ``stages`` in order; ``progress(stage name, fraction)`` as they go."""
    for stage in stages:
        if progress is not None:
            progress(stage.name, 0.0)
            context.progress = _stage_progress(progress, stage.name)
        keys = run_stage(stage, context, keys)
    return keys


def run_stages_many(stages: Sequence[Stage], contexts: Sequence[StageContext],
                    keys: Sequence[JobKeys]) -> list[JobKeys]:
    """Run ``stages`` in order for several jobs of one spec (a cohort's chunk), each stage
    for all of them at once (:meth:`Stage.run_many`), timed once per stage."""
    done = list(keys)
    for stage in stages:
        with stage_timer(stage.name):
            done = stage.run_many(contexts, done)
    return done


def _stage_progress(progress: Progress, name: str) -> Callable[[float], None]:
    """``progress`` of the stage ``name``, as the stage reports it (a fraction)."""
    return lambda fraction: progress(name, fraction)


def delete_job(store: ArtifactStore, job_id: str) -> None:
    """Remove every artifact of a job (used when it fails)."""
    for key in store.list(f"jobs/{job_id}/"):
        store.delete(key)


# --- inline runner ---------------------------------------------------------------------------

def check_job_id(job_id: str) -> str:
    """``job_id`` if it can name a job's folder; ValueError otherwise."""
    if not JOB_ID.fullmatch(job_id):
        raise JobSpecError(f"job id {job_id!r} must be 1-128 letters, digits, '_', '.' or "
                           "'-', starting with a letter or digit")
    return job_id


class Explainer:
    """Runs the stages inline, in this process: the library API and the embedded mode."""

    def __init__(self, backend: ModelBackend, store: ArtifactStore,
                 progress: Progress | None = None) -> None:
        self.backend, self.store = backend, store
        self.progress = progress or (lambda stage, fraction: None)

    def spec(self, target: str | None = None, **settings: Any) -> JobSpec:
        """A checked spec for this backend's model set (see :meth:`JobSpec.create`)."""
        return JobSpec.create(self.backend.model_set, target, **settings)

    def explain(self, image: ImageSource, spec: JobSpec | None = None,
                job_id: str | None = None, filename: str | None = None) -> ExplanationResult:
        """Explain the classifier's prediction on ``image`` as ``spec`` says (default: the
        model set's default target and settings).

        Everything is checked before anything is written; on any failure the job's
        artifacts are removed (a probed direction, complete in itself, is kept).
        """
        spec = spec or self.spec()
        if spec.model_set != self.backend.model_set.name:
            raise JobSpecError(f"the job is for model set {spec.model_set!r}, the backend "
                               f"serves {self.backend.model_set.name!r}")
        job_id = check_job_id(job_id) if job_id is not None else uuid.uuid4().hex[:12]
        model_input = load_input(image, self.backend.model_set.preprocessing, filename)
        try:
            return self.run(job_id, spec, store_input(self.store, job_id, model_input))
        except BaseException:
            delete_job(self.store, job_id)
            raise

    def run(self, job_id: str, spec: JobSpec, input_key: str) -> ExplanationResult:
        """Run the stages of a job whose input is stored; its result."""
        context = StageContext(job_id, spec, self.store, lambda: self.backend)
        keys = run_stages(STAGES, context, JobKeys(input=input_key), self.progress)
        self.progress(STAGES[-1].name, 1.0)
        result = ExplanationResult.from_json(self.store.get(keys.manifest))
        log.info("explained", extra={"job_id": job_id, "unreliable": result.unreliable})
        return result
