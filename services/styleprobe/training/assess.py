"""Measurements taken when a model set is exported: the numbers of its model card.

- classifier test AUC on held-out real images;
- encoder: pixel MSE of ``G(E(x))`` and the share of held-out real images whose
  prediction falls on the same side of the threshold for ``x`` and ``G(E(x))``;
- realism: held-out accuracy of a small classifier trained to tell real images from
  generated ones (the analogue of the paper's radiologist test; 50% is perfect);
- the quality gate: the reconstruction error beyond which an explanation is unreliable;
- inversion identity: top-1 retrieval of each of 100 held-out images from its
  reconstruction, and the spread ratio (:mod:`styleprobe.evaluation.identity`);
- nuisance directions: for each labelled nuisance factor, the unit direction in W along
  which it grows (linear regression of the factor on encoded real images), used to
  orthogonalise target directions (InterFaceGAN's conditional manipulation).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeCV

from styleprobe.data.datasets import ImageSet
from styleprobe.evaluation.identity import identity
from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, seeded_z
from styleprobe.training.checkpoint import to_tensor
from styleprobe.training.classifier import auc_of, predict_proba
from styleprobe.training.encoder import decode

GATE_QUANTILE = 0.99
GATE_MARGIN = 1.5


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             batch: int = 256) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def reconstruct(G: Generator, E: Encoder,
                images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded latents and reconstructions of NCHW images in [-1, 1]."""
    w = _batched(E, images)
    return w, _batched(lambda v: decode(G, v), w)


def realism_accuracy(G: Generator, real: ImageSet, seed: int = 0, epochs: int = 3) -> float:
    """Held-out accuracy of a real-vs-generated classifier (0.5 means indistinguishable)."""
    fake = _batched(lambda z: decode(G, G.mapping(z)), seeded_z(len(real), G.cfg.z_dim, seed + 7))
    return real_vs_generated_accuracy(to_tensor(real.images), fake, seed, epochs)


def real_vs_generated_accuracy(real: torch.Tensor, fake: torch.Tensor, seed: int = 0,
                               epochs: int = 3) -> float:
    """Held-out accuracy of a small classifier trained to tell ``real`` from ``fake``
    (equally many NCHW images in [-1, 1]); a quarter of all images is held out."""
    n = len(real)
    x = torch.cat([real, fake])
    y = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(len(fake), dtype=torch.long)])
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    cut = int(0.75 * len(x))
    train_idx, test_idx = order[:cut], order[cut:]
    torch.manual_seed(seed)
    model = Classifier(real.shape[-1], real.shape[1], 2, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        perm = train_idx[torch.randperm(len(train_idx))]
        for i in range(0, len(perm) - 63, 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    probs = predict_proba(model, x[test_idx])
    return float((probs.argmax(1) == y[test_idx].numpy()).mean())


def nuisance_directions(w: np.ndarray, factors: dict[str, np.ndarray],
                        names: list[str]) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Unit directions in W along which each nuisance factor grows, with their R^2."""
    directions, scores = {}, {}
    cut = int(0.8 * len(w))
    for name in names:
        target = factors[name]
        if np.std(target) < 1e-6:
            continue
        model = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(w[:cut], target[:cut])
        vec = model.coef_ / (np.linalg.norm(model.coef_) + 1e-12)
        directions[name] = [float(v) for v in vec]
        scores[name] = float(model.score(w[cut:], target[cut:]))
    return directions, scores


def assess(G: Generator, E: Encoder, C: torch.nn.Module, test: ImageSet, target_index: int,
           threshold: float, nuisance: list[str], seed: int = 0) -> dict:
    """Every measured number of a model set, on held-out real images ``test``."""
    x = to_tensor(test.images)
    w, rec = reconstruct(G, E, x)
    p_real = predict_proba(C, x)[:, target_index]
    p_rec = predict_proba(C, rec)[:, target_index]
    mse = ((rec - x) ** 2).mean(dim=(1, 2, 3)).numpy() / 4  # on the [0, 1] scale
    agree = (p_real >= threshold) == (p_rec >= threshold)
    directions, r2 = nuisance_directions(w.numpy(), test.factors, nuisance)
    kept = identity(x.numpy(), rec.numpy())
    metrics = {
        "test_images": len(test),
        "encoder_pixel_mse": float(mse.mean()),
        "encoder_pixel_mse_p95": float(np.quantile(mse, 0.95)),
        "encoder_agreement": float(agree.mean()),
        "identity_top1": kept["top1"],
        "identity_spread_ratio": kept["spread_ratio"],
        "realism_accuracy": realism_accuracy(G, test.subset(slice(0, min(len(test), 2000))),
                                             seed),
        "nuisance_direction_r2": r2,
        "quality_gate_max_pixel_mse": float(np.quantile(mse, GATE_QUANTILE) * GATE_MARGIN),
    }
    if test.labels is not None and len(np.unique(test.labels)) > 1:
        probs = predict_proba(C, x)
        metrics["classifier_test_auc"] = auc_of(probs, test.labels, positive=target_index)
        metrics["classifier_test_accuracy"] = float((probs.argmax(1) == test.labels).mean())
        metrics["classifier_auc_on_reconstructions"] = float(
            auc_of(predict_proba(C, rec), test.labels, positive=target_index))
    return {"metrics": metrics, "nuisance_directions": directions}
