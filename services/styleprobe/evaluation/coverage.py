"""What the generator draws, against held-out real images: coverage per oracle factor, and
precision and recall of the generated distribution.

Coverage. The oracle (:mod:`styleprobe.evaluation.oracle`) reads every factor from the
real and from the generated images alike, so its own reading error cancels out of the
comparison. A continuous factor (exposure, joint-space narrowing, ...) is binned at the
deciles of its real readings; a two-valued factor (the corner ``marker``) is read as
present where its reading exceeds one half; the disease score is binned at the phantom
set's grade thresholds (the KL-like grade histogram of the knees; normal/tumour for
histology). A factor's **coverage** is the overlap of the two histograms,
``sum_b min(real_b, generated_b)``: 1 where the generator draws the factor as often, at
every level, as the real images show it, 0 where it never draws what the real images have.
A two-valued factor also gets its two rates and their ratio (the marker's must stay
within ±30% of the real rate).

Precision and recall (Kynkäänniemi et al., *Improved Precision and Recall Metric for
Assessing Generative Models*, NeurIPS 2019): each image set spans a manifold, the union
of balls around each of its feature vectors reaching to the ``k``-th nearest neighbour of
the same set; precision is the share of generated images inside the real manifold
(realism), recall the share of real images inside the generated manifold (coverage of
the real variety). Feature space: the oracle network's pooled last-convolution features
(its input to the linear read-out), a network trained to read every phantom factor at
the model set's resolution; Inception features, the paper's choice, know nothing of
radiographs and are not available offline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from styleprobe.data import histology, knee
from styleprobe.evaluation.oracle import DISEASE_SCORE, Oracle

DECILE_BINS = 10
PRESENT = 0.5  # a two-valued factor's reading above this counts as present
NEIGHBOURS = 3  # k of the k-NN manifolds (the paper's choice)
MARKER_RATE_TOLERANCE = 0.3  # the generated marker rate must be within ±30% of the real
GRADES = {  # the disease score's class edges: KL grades 0-4, or normal/tumour
    "knee": list(knee.GRADE_THRESHOLDS),
    "histology": [histology.TUMOUR_THRESHOLD],
}


def histogram_overlap(real: np.ndarray, generated: np.ndarray, edges: np.ndarray) -> float:
    """``sum_b min(p_b, q_b)`` of the two samples' shares in the bins cut at ``edges``."""
    bins = len(edges) + 1
    p = np.bincount(np.digitize(real, edges), minlength=bins) / len(real)
    q = np.bincount(np.digitize(generated, edges), minlength=bins) / len(generated)
    return float(np.minimum(p, q).sum())


def factor_coverage(real: dict[str, np.ndarray], generated: dict[str, np.ndarray],
                    two_valued: set[str], grade_edges: list[float]) -> dict[str, dict[str, Any]]:
    """Per factor (oracle readings of real and of generated images, by name): its coverage
    and what it was computed from (module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for name in real:
        r, g = real[name], generated[name]
        if name in two_valued:
            real_rate, gen_rate = float(np.mean(r > PRESENT)), float(np.mean(g > PRESENT))
            out[name] = {"kind": "two-valued", "real_rate": real_rate,
                         "generated_rate": gen_rate,
                         "rate_ratio": gen_rate / real_rate if real_rate > 0 else None,
                         "coverage": histogram_overlap(r, g, np.array([PRESENT]))}
        elif name == DISEASE_SCORE:
            edges = np.asarray(grade_edges)
            bins = len(edges) + 1
            out[name] = {"kind": "grade", "edges": grade_edges,
                         "real_histogram": _shares(r, edges, bins),
                         "generated_histogram": _shares(g, edges, bins),
                         "coverage": histogram_overlap(r, g, edges)}
        else:
            edges = np.unique(np.quantile(r, np.linspace(0, 1, DECILE_BINS + 1)[1:-1]))
            out[name] = {"kind": "deciles", "real_mean": float(r.mean()),
                         "generated_mean": float(g.mean()), "real_std": float(r.std()),
                         "generated_std": float(g.std()),
                         "coverage": histogram_overlap(r, g, edges)}
    return out


def _shares(values: np.ndarray, edges: np.ndarray, bins: int) -> list[float]:
    counts = np.bincount(np.digitize(values, edges), minlength=bins)
    return (counts / len(values)).tolist()


def oracle_features(oracle: Oracle, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """The oracle network's pooled last-convolution features ``(N, D)`` of NCHW images in
    [-1, 1]: the feature space of :func:`precision_recall`."""
    model = oracle.model
    pool = torch.nn.Sequential(*list(model.head)[:2])  # adaptive average pool, flatten
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    with torch.no_grad():
        out = [pool(model.features(x[i:i + batch])) for i in range(0, len(x), batch)]
    return torch.cat(out).numpy().astype(np.float64)


def _kth_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its ``k``-th nearest other row."""
    d = torch.cdist(features, features)
    return d.kthvalue(k + 1, dim=1).values  # the 1st is the row itself (distance 0)


def precision_recall(real: np.ndarray, generated: np.ndarray,
                     k: int = NEIGHBOURS) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``generated`` against
    ``real`` feature vectors ``(N, D)``, with ``k``-nearest-neighbour manifolds."""
    if min(len(real), len(generated)) <= k:
        raise ValueError(f"precision and recall need more than k={k} images in each set")
    r, g = torch.from_numpy(real), torch.from_numpy(generated)
    r_radius, g_radius = _kth_radius(r, k), _kth_radius(g, k)
    d = torch.cdist(g, r)  # generated x real
    precision = (d <= r_radius[None, :]).any(dim=1).double().mean().item()
    recall = (d <= g_radius[:, None]).any(dim=0).double().mean().item()
    return {"precision": precision, "recall": recall, "k": k}


def measure_coverage(oracle: Oracle, real: np.ndarray, generated: np.ndarray,
                     real_truth: dict[str, np.ndarray]) -> dict[str, Any]:
    """Coverage of every oracle factor and precision/recall, for NCHW real and generated
    images in [-1, 1]; ``real_truth`` (the real images' true factors) tells which factors
    are two-valued and how well the oracle reads the marker on them."""
    two_valued = {name for name, v in real_truth.items()
                  if name in oracle.factors and np.isin(v, (0.0, 1.0)).all()}
    read_real, read_gen = oracle.read_factors(real), oracle.read_factors(generated)
    factors = factor_coverage(read_real, read_gen, two_valued, GRADES[oracle.phantoms])
    for name in two_valued:
        factors[name]["true_real_rate"] = float(np.mean(real_truth[name]))
    marker = factors.get("marker")
    marker_ok = (None if marker is None or marker["rate_ratio"] is None
                 else abs(marker["rate_ratio"] - 1.0) <= MARKER_RATE_TOLERANCE)
    return {
        "real_images": len(real), "generated_images": len(generated),
        "feature_space": "oracle pooled last-convolution features",
        "factors": factors,
        "min_coverage_factor": min(factors, key=lambda k: factors[k]["coverage"]),
        "marker_rate_within_tolerance": marker_ok,
        **precision_recall(oracle_features(oracle, real), oracle_features(oracle, generated)),
    }


def card_metrics(coverage: dict[str, Any]) -> dict[str, Any]:
    """The model card's numbers of a :func:`measure_coverage` result: precision, recall,
    and per factor its coverage with a short description of each side."""
    return {
        "generator_precision": coverage["precision"],
        "generator_recall": coverage["recall"],
        "coverage_samples": coverage["generated_images"],
        "factor_coverage": {name: {"coverage": f["coverage"], "real": _describe(f, "real"),
                                   "generated": _describe(f, "generated")}
                            for name, f in coverage["factors"].items()},
    }


def _describe(factor: dict[str, Any], side: str) -> str:
    if factor["kind"] == "two-valued":
        return f"rate {factor[f'{side}_rate']:.3f}"
    if factor["kind"] == "grade":
        return "grades " + " / ".join(f"{v:.2f}" for v in factor[f"{side}_histogram"])
    return f"{factor[f'{side}_mean']:.3g} ± {factor[f'{side}_std']:.3g}"
