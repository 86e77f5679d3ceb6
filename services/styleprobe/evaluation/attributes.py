"""Attributes and conditional directions, measured against the oracle.

Two questions of issue 21, on the encoded held-out images of :mod:`.evaluate`:

1. **Attribute purity and separation.** Each attribute discovered in StyleSpace
   (:mod:`styleprobe.explain.attributes`) is moved from ``-extent`` to ``+extent`` of its
   channel's spread on every image; the oracle reads every factor at both ends. An
   attribute's change per factor is the mean change in standard units (signed, so only a
   consistent movement counts). What it moves is the category with the largest change —
   the disease (its composite score: the disease factors move together) or one nuisance —
   and its **purity** that change over the sum of all categories' (1: one thing alone;
   the single factor that moves most is reported too). The same numbers for the
   single probed direction (its traversal from the grid's first to last λ) stand beside
   them. **Separation**: whether the disease (any disease factor), the shortcut marker and
   each nuisance is the factor of some attribute of its own.
2. **Conditional directions** (InterFaceGAN's conditional boundary). Readers — CNN
   regressors trained on labelled real phantoms of their own seed (never the evaluation
   oracle, whose seed and images they do not share) — read the nuisance factors of the
   probe's generated samples; each nuisance's direction in W is fitted on those readings
   (ridge), and the probed target direction is made orthogonal to their span: moving along
   it holds the nuisance readings of the generator's samples constant to first order. It is
   traversed like the other directions, and the nuisance movement is compared with the
   goal: max |Spearman(λ, nuisance)| <= 0.3, or at most 0.3 std of nuisance change per std
   of disease-score change.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from styleprobe.backends.base import ModelBackend
from styleprobe.data.datasets import PHANTOMS
from styleprobe.evaluation.oracle import (
    DISEASE_SCORE,
    Oracle,
    OracleConfig,
    load_or_train_oracle,
)
from styleprobe.evaluation.traversals import Traversals, factor_motion, traverse_many
from styleprobe.explain.attributes import ensure_attributes, load_discovery, traverse_attributes
from styleprobe.explain.direction import (
    Direction,
    DirectionError,
    GeneratorCoverageError,
    needed_per_side,
    rare_side_finding,
    sample_latents,
    score_latents,
)
from styleprobe.explain.scores import predicted
from styleprobe.explain.spec import AttributeSettings, ProbeSettings
from styleprobe.storage.base import ArtifactStore

log = logging.getLogger(__name__)
MIN_R2 = 0.5  # factors the oracle reads worse than this on held-out phantoms are left out
IMAGES = 24  # encoded test images each attribute is moved on
EXTENT = 4.0  # attributes are moved from -EXTENT to +EXTENT of their channel's spread
GOAL_SPEARMAN = 0.3  # the goal for nuisance movement
GOAL_RATIO = 0.3  # ... or nuisance change per unit of disease-score change
CONDITIONAL_SAMPLES = 4000  # generated samples the conditional direction is probed on
CONDITIONAL_IMAGES = 40  # encoded test images it is traversed on
# The readers: a network of the oracle's kind, trained on labelled phantoms of another seed
# (ORACLE_SEED + READER_SEED_OFFSET) and fewer of them, so none of the oracle's images.
READERS = OracleConfig(train_samples=3000, test_samples=500, epochs=6, seed=101)


@dataclass(frozen=True)
class AttributeEvaluationSettings:
    """How attributes and the conditional direction are measured."""

    attributes: AttributeSettings = field(default_factory=AttributeSettings)
    images: int = IMAGES
    extent: float = EXTENT
    conditional_samples: int = CONDITIONAL_SAMPLES
    conditional_images: int = CONDITIONAL_IMAGES
    readers: OracleConfig = READERS


def readers_config(oracle: OracleConfig) -> OracleConfig:
    """How the readers are trained: like the oracle (``oracle``: the evaluation's settings,
    e.g. ``--training-samples``), on phantoms of their own seed, at most :data:`READERS`'
    size and epochs."""
    return replace(oracle, seed=READERS.seed,
                   train_samples=min(oracle.train_samples, READERS.train_samples),
                   test_samples=min(oracle.test_samples, READERS.test_samples),
                   epochs=min(oracle.epochs, READERS.epochs))


def readable_factors(oracle: Oracle) -> list[str]:
    """The factors the oracle reads well (R² >= :data:`MIN_R2`), the composite disease
    score included."""
    return [k for k in oracle.factors if oracle.r2.get(k, 0.0) >= MIN_R2]


def category(phantoms: str, factor: str) -> str:
    """``disease`` for a disease factor or the disease score; the factor's name otherwise."""
    disease = (*PHANTOMS[phantoms].disease_factors, DISEASE_SCORE)
    return "disease" if factor in disease else factor


def category_changes(changes: dict[str, float], phantoms: str) -> dict[str, float]:
    """|change| per category: the disease as one (its composite score, else its largest
    factor; the disease factors move together, so counting each would split it), and every
    nuisance on its own."""
    disease = [abs(changes[k]) for k in PHANTOMS[phantoms].disease_factors if k in changes]
    out = {}
    if DISEASE_SCORE in changes or disease:
        out["disease"] = abs(changes[DISEASE_SCORE]) if DISEASE_SCORE in changes else max(disease)
    out |= {k: abs(v) for k, v in changes.items() if category(phantoms, k) != "disease"}
    return out


def motion_summary(changes: dict[str, float], phantoms: str) -> dict[str, Any]:
    """What a movement moves most: the single factor with the largest change, the category
    (disease, or a nuisance) with the largest change, and the purity: that category's
    change over the sum of all categories' (1: it moves one thing alone). None of them
    when the oracle reads no factor well enough."""
    if not changes:
        return {"changes": {}, "factor": None, "category": None, "category_changes": {},
                "purity": None}
    categories = category_changes(changes, phantoms)
    total = sum(categories.values())
    top = max(categories, key=lambda k: categories[k])
    singles = {k: v for k, v in changes.items() if k != DISEASE_SCORE} or changes
    return {"changes": changes, "factor": max(singles, key=lambda k: abs(singles[k])),
            "category": top, "category_changes": categories,
            "purity": categories[top] / total if total > 0 else 0.0}


def attribute_motion(backend: ModelBackend, store: ArtifactStore, oracle: Oracle,
                     w: np.ndarray, target: str,
                     settings: AttributeEvaluationSettings) -> dict[str, Any]:
    """Every discovered attribute's factor changes, factor and purity over ``w``."""
    discovery = load_discovery(store, ensure_attributes(backend, store, target,
                                                        settings.attributes))
    factors = readable_factors(oracle)
    columns = [oracle.factors.index(k) for k in factors]
    ends = np.array([-settings.extent, settings.extent])
    change = np.zeros((len(discovery.attributes), len(factors)))
    for latent in w[:settings.images]:
        moved = traverse_attributes(backend, latent, discovery, ends)
        frames = np.concatenate([t.images for t in moved])  # (A * 2, C, R, R)
        read = oracle.read(frames)[:, columns].reshape(len(moved), 2, len(factors))
        change += read[:, 1] - read[:, 0]
    change /= min(len(w), settings.images)
    found = []
    for attribute, row in zip(discovery.attributes, change, strict=True):
        summary = motion_summary(dict(zip(factors, map(float, row), strict=True)),
                                 oracle.phantoms)
        found.append({"rank": attribute.rank, "name": attribute.name,
                      "ranking_effect": attribute.effect_logit,
                      "flip_share": attribute.flip_share, **summary})
    return {"key": discovery.key, "settings": discovery.settings,
            "candidates": discovery.candidates, "extent": settings.extent,
            "images": min(len(w), settings.images), "factors": factors, "attributes": found}


def direction_motion(traversals: Traversals, oracle: Oracle) -> dict[str, Any]:
    """The same summary for a direction's traversals (first to last λ)."""
    motion = factor_motion(traversals, oracle.factors)
    changes = {k: motion[k]["change_mean"] for k in readable_factors(oracle)}
    return motion_summary(changes, oracle.phantoms)


def separation(found: list[dict[str, Any]], phantoms: str, factors: list[str]
               ) -> dict[str, Any]:
    """Which attributes (by rank) move each category most: the disease, the marker and
    every nuisance the oracle reads; whether disease and marker come apart."""
    nuisance = [k for k in PHANTOMS[phantoms].nuisance_factors if k in factors]
    categories = ["disease", *nuisance]
    ranks = {c: [a["rank"] for a in found if a["category"] == c] for c in categories}
    marker = "marker" in ranks
    return {
        "attributes_by_category": ranks,
        "separate_categories": sorted(c for c, r in ranks.items() if r),
        "disease_found": bool(ranks["disease"]),
        "marker_readable": marker,
        "marker_found": bool(ranks.get("marker")) if marker else None,
        "nuisances_found": sorted(c for c in nuisance if c != "marker" and ranks[c]),
    }


# --- conditional direction ---------------------------------------------------------------------

def conditional_direction(backend: ModelBackend, readers: Oracle, target: str,
                          probe: ProbeSettings) -> tuple[Direction, dict[str, float]]:
    """The target direction probed with the readers' nuisance readings of the generated
    samples held constant (InterFaceGAN's conditional boundary); with each nuisance
    direction's cosine to the unconstrained one."""
    model_set = backend.model_set
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    nuisance = [k for k in PHANTOMS[readers.phantoms].nuisance_factors
                if readers.r2.get(k, 0.0) >= MIN_R2]
    if not nuisance:
        raise DirectionError(f"the readers read no nuisance factor with held-out R² >= "
                             f"{MIN_R2}: nothing to hold constant")
    w = sample_latents(backend, probe)
    labels = predicted(score_latents(backend, w, class_index), threshold)
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < needed_per_side(probe):
        raise GeneratorCoverageError(rare_side_finding(model_set, target, positives,
                                                      len(labels)))
    readings = np.concatenate([readers.read(backend.synthesis(w[i:i + 512]))
                               for i in range(0, len(w), 512)])
    train, test = train_test_split(np.arange(len(w)), test_size=probe.test_fraction,
                                   random_state=probe.seed, stratify=labels)
    model = LogisticRegression(C=probe.regularization, max_iter=2000).fit(w[train],
                                                                         labels[train])
    fitted = model.coef_[0] / np.linalg.norm(model.coef_[0])
    normals = []
    for name in nuisance:
        column = readings[:, readers.factors.index(name)]
        coef = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(w[train], column[train]).coef_
        normals.append(coef / (np.linalg.norm(coef) + 1e-12))
    basis, _ = np.linalg.qr(np.array(normals).T)
    rest = fitted - basis @ (basis.T @ fitted)
    vector = rest / np.linalg.norm(rest)
    cosines = {n: float(fitted @ d) for n, d in zip(nuisance, normals, strict=True)}
    direction = Direction(
        key="conditional", target=target, class_index=class_index, threshold=threshold,
        vector=[float(v) for v in vector],
        auc=float(roc_auc_score(labels[test], w[test] @ vector)),
        accuracy=float(model.score(w[test], labels[test])),
        auc_unconstrained=float(roc_auc_score(labels[test], w[test] @ fitted)),
        positive_share=float(labels.mean()), latent_std=float(np.std(w @ vector)),
        samples=len(w), train_samples=len(train), test_samples=len(test),
        probe=asdict(probe),
        generator=[], classifier="", orthogonalized_against=cosines)
    return direction, cosines


def nuisance_movement(traversals: Traversals, oracle: Oracle) -> dict[str, Any]:
    """The goal's two measures: the largest |Spearman(λ, nuisance)| over the readable
    nuisance factors, and the largest nuisance change per unit of disease-score change."""
    motion = factor_motion(traversals, oracle.factors)
    nuisance = [k for k in PHANTOMS[oracle.phantoms].nuisance_factors
                if oracle.r2.get(k, 0.0) >= MIN_R2]
    disease = abs(motion[DISEASE_SCORE]["change_mean"])
    if not nuisance:  # nothing to measure it by
        return {"worst_nuisance": None, "worst_nuisance_spearman": None,
                "largest_nuisance_change": None, "nuisance_per_disease": None,
                "disease_change": motion[DISEASE_SCORE]["change_mean"],
                "disease_spearman": motion[DISEASE_SCORE]["spearman_median"], "met": None}
    worst = max(nuisance, key=lambda k: abs(motion[k]["spearman_median"]))
    largest = max(nuisance, key=lambda k: abs(motion[k]["change_mean"]))
    ratio = (abs(motion[largest]["change_mean"]) / disease if disease > 1e-9
             else None)  # None: the disease does not move at all
    spearman = abs(motion[worst]["spearman_median"])
    return {"worst_nuisance": worst, "worst_nuisance_spearman": spearman,
            "largest_nuisance_change": largest, "nuisance_per_disease": ratio,
            "disease_change": motion[DISEASE_SCORE]["change_mean"],
            "disease_spearman": motion[DISEASE_SCORE]["spearman_median"],
            "met": bool(spearman <= GOAL_SPEARMAN
                        or (ratio is not None and ratio <= GOAL_RATIO))}


def _subset(traversals: Traversals, n: int) -> Traversals:
    return replace(traversals, probabilities=traversals.probabilities[:n],
                   readings=traversals.readings[:n], flip_lambdas=traversals.flip_lambdas[:n],
                   end_frames=traversals.end_frames[:n])


def evaluate_attributes(backend: ModelBackend, store: ArtifactStore, oracle: Oracle,
                        w: np.ndarray, p_rec: np.ndarray, lambdas: np.ndarray,
                        probe: ProbeSettings, cache_dir: Path,
                        directions: dict[str, Traversals],
                        settings: AttributeEvaluationSettings | None = None) -> dict[str, Any]:
    """Attribute purity and separation beside the probed directions, and the conditional
    direction's nuisance movement beside theirs (``directions``: the evaluation's
    traversals by name, over the same encoded images ``w``)."""
    settings = settings or AttributeEvaluationSettings()
    target = backend.model_set.default_target
    record: dict[str, Any] = {"min_r2": MIN_R2}
    if backend.model_set.has_stylespace:
        attributes = attribute_motion(backend, store, oracle, w, target, settings)
        record["attributes"] = attributes
        record["separation"] = separation(attributes["attributes"], oracle.phantoms,
                                          attributes["factors"])
        purities = [a["purity"] for a in attributes["attributes"] if a["purity"] is not None]
        record["mean_purity"] = float(np.mean(purities)) if purities else None
    else:
        record["attributes"] = None
    record["directions"] = {name: direction_motion(t, oracle) for name, t in directions.items()}
    readers = load_or_train_oracle(cache_dir, oracle.phantoms,
                                   backend.model_set.preprocessing.resolution, settings.readers)
    try:
        conditional, cosines = conditional_direction(
            backend, readers, target, replace(probe, samples=min(probe.samples,
                                                                 settings.conditional_samples)))
    except DirectionError as exc:
        log.warning("conditional direction not probed", extra={"reason": str(exc)})
        record["conditional"] = {"readers_r2": readers.r2, "not_probed": str(exc)}
        return record
    n = min(len(w), settings.conditional_images)
    moved = traverse_many(backend, w[:n], p_rec[:n], conditional, lambdas, oracle, None)
    record["conditional"] = {
        "readers_r2": readers.r2, "samples": conditional.samples, "auc": conditional.auc,
        "auc_unconstrained": conditional.auc_unconstrained, "cosines": cosines,
        "images": n, "motion": direction_motion(moved, oracle),
        "nuisance": nuisance_movement(moved, oracle),
        "compared": {name: nuisance_movement(_subset(t, n), oracle)
                     for name, t in directions.items()},
    }
    return record


UNREADABLE = (f"the oracle reads no factor it needs with held-out R² >= {MIN_R2} (train it on "
              "more phantoms)")


def attribute_targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the evaluation's targets table (ids ``attribute_*`` and ``conditional_*``);
    a row that cannot be measured says why."""
    rows: list[dict[str, Any]] = []
    if record.get("attributes"):
        plain = record["directions"].get("plain", {}).get("purity")
        purity, sep = record["mean_purity"], record["separation"]
        measurable = plain is not None and purity is not None
        rows += [
            {"id": "attribute_purity",
             "name": "Mean purity of the top attributes (largest category change / sum), "
                     + (f"against the probed direction's {plain:.3f}" if plain is not None
                        else "against the probed direction's"),
             "measured": purity, "target": "> the direction's",
             "met": bool(purity > plain) if measurable else None,
             **({} if measurable else {"reason": UNREADABLE})},
            {"id": "attribute_separation",
             "name": "Disease and marker as separate attributes ("
                     + (", ".join(sep["separate_categories"]) or "nothing") + " found)",
             "measured": float(len(sep["separate_categories"])),
             "target": "disease and marker each",
             "met": (None if sep["marker_found"] is None
                     else bool(sep["disease_found"] and sep["marker_found"])),
             **({"reason": "the oracle cannot read the marker"}
                if sep["marker_found"] is None else {})},
        ]
    if "not_probed" in record["conditional"]:
        rows.append({"id": "conditional_nuisance",
                     "name": "Conditional direction: max |Spearman(λ, nuisance)|",
                     "measured": None, "target": f"<= {GOAL_SPEARMAN} or ratio <= {GOAL_RATIO}",
                     "met": None, "reason": record["conditional"]["not_probed"]})
        return rows
    conditional = record["conditional"]["nuisance"]
    ratio = conditional["nuisance_per_disease"]
    rows.append({
        "id": "conditional_nuisance",
        "name": "Conditional direction: max |Spearman(λ, nuisance)| "
                f"({conditional['worst_nuisance'] or 'none readable'}); nuisance per disease "
                "change " + (f"{ratio:.2f}" if ratio is not None else "—"),
        "measured": conditional["worst_nuisance_spearman"],
        "target": f"<= {GOAL_SPEARMAN} or ratio <= {GOAL_RATIO}",
        "met": conditional["met"],
        **({"reason": UNREADABLE} if conditional["met"] is None else {})})
    return rows


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def attribute_blocks(record: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The evaluation report's section on attributes and the conditional direction."""
    if not record:
        return []
    blocks: list[tuple[str, Any]] = [("h2", "7. Attributes (StyleSpace) and the conditional "
                                            "direction")]
    found = record.get("attributes")
    if found:
        sep = record["separation"]
        blocks += [
            ("p", f"The top {len(found['attributes'])} StyleSpace channels (AttFind over "
                  f"{found['settings']['samples']} generated images, {found['candidates']} "
                  f"candidates), each moved from -{found['extent']:g} to +{found['extent']:g} "
                  f"of its spread on {found['images']} encoded test images; the oracle's "
                  "change of every factor it reads (R² >= "
                  f"{record['min_r2']}) in std units. Purity: the largest change over the "
                  "sum of all."),
            ("table", (["Attribute", "Moves most", "Category", "Purity", "Ranking effect"],
                       [[f"{a['rank']}. {a['name']}", a["factor"] or "—",
                         a["category"] or "—", _fmt(a["purity"]),
                         f"{a['ranking_effect']:.2f}"]
                        for a in found["attributes"]]
                       + [[f"direction: {name}", m["factor"] or "—", m["category"] or "—",
                           _fmt(m["purity"]), "—"]
                          for name, m in record["directions"].items()])),
            ("p", "Found as an attribute of its own: "
                  + (", ".join(sep["separate_categories"]) or "nothing") + "."),
        ]
    conditional = record["conditional"]
    if "not_probed" in conditional:
        return [*blocks, ("p", f"Conditional direction not probed: {conditional['not_probed']}.")]
    rows = [["conditional", conditional["nuisance"]]] + [
        [name, movement] for name, movement in conditional["compared"].items()]
    blocks += [
        ("p", f"Conditional direction: probed on {conditional['samples']} generated samples "
              "with the nuisance readings of CNN readers trained on labelled phantoms of "
              "their own seed held constant (held-out AUC "
              f"{conditional['auc']:.3f}, unconstrained {conditional['auc_unconstrained']:.3f}); "
              f"traversed on {conditional['images']} encoded test images beside the probed "
              "directions. Goal: max |Spearman(λ, nuisance)| <= 0.3 or nuisance change <= 0.3 "
              "std per std of disease-score change."),
        ("table", (["Direction", "Worst nuisance", "|Spearman|", "Largest nuisance change",
                    "Nuisance / disease change", "Disease Spearman", "Goal met"],
                   [[name, m["worst_nuisance"] or "—", _fmt(m["worst_nuisance_spearman"]),
                     m["largest_nuisance_change"] or "—", _fmt(m["nuisance_per_disease"]),
                     _fmt(m["disease_spearman"]),
                     {True: "yes", False: "no", None: "not measured"}[m["met"]]]
                    for name, m in rows])),
    ]
    return blocks
