"""Adaptive discriminator augmentation (ADA; Karras et al., *Training Generative
Adversarial Networks with Limited Data*, NeurIPS 2020), as a small pipeline in plain torch.

Every image the discriminator sees, real or generated, passes through :func:`augment`:
each transform is applied to each image independently with probability ``p``. All of
them are differentiable in the image, so the generator learns through them, and none
leaks into what the generator draws as long as ``p`` stays below about 0.8 (the paper's
finding for this kind of pipeline). The transforms, ADA's "bgc" subset that suits
grayscale radiographs and H&E patches alike:

- geometric, one affine resampling (bilinear, reflection padding): integer-free
  translation up to 1/8 of the image, isotropic scaling (log-normal, σ = 0.2·ln 2),
  rotation (uniform within ±180°); horizontal flips are left out (they would move the
  corner marker, a factor the evaluation reads);
- colour: brightness (additive, σ = 0.2), contrast (log-normal, σ = 0.5·ln 2), and for
  RGB saturation (log-normal, σ = ln 2).

:class:`AdaptiveProbability` adjusts ``p`` from the overfitting heuristic
``r_t = E[sign(D(real))]`` over the last few steps: above the target (0.6) the
discriminator is sure of the real images, so ``p`` rises; below, it falls. ``p`` can move
from 0 to 1 within ``speed_kimg`` thousand real images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

TRANSLATE = 0.125  # of the image size
SCALE_STD = 0.2 * math.log(2)
BRIGHTNESS_STD = 0.2
CONTRAST_STD = 0.5 * math.log(2)
SATURATION_STD = math.log(2)


def _chance(p: float, n: int, gen: torch.Generator) -> torch.Tensor:
    """1.0 for each of ``n`` images with probability ``p``, else 0.0."""
    return (torch.rand(n, generator=gen) < p).float()


def augment(images: torch.Tensor, p: float, gen: torch.Generator,
            rows: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
    """Augment NCHW images in [-1, 1] (any device) with probability ``p`` per transform;
    the parameters come from ``gen`` (a CPU generator), so a seeded step is repeatable.
    ``images`` may be the ``rows`` of a global ``batch`` (one process's shard): the
    parameters are drawn for the whole batch and each row gets its own."""
    if p <= 0:
        return images
    channels = images.shape[1]
    n = len(images) if batch is None else batch
    on = [_chance(p, n, gen) for _ in range(6)]
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * TRANSLATE * 2 * on[0][:, None]
    scale = torch.exp(torch.randn(n, generator=gen) * SCALE_STD * on[1])
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.pi * on[2]
    brightness = torch.randn(n, generator=gen) * BRIGHTNESS_STD * on[3]
    contrast = torch.exp(torch.randn(n, generator=gen) * CONTRAST_STD * on[4])
    saturation = torch.exp(torch.randn(n, generator=gen) * SATURATION_STD * on[5])
    if rows is not None:
        shift, scale, angle, brightness, contrast, saturation = (
            v[rows] for v in (shift, scale, angle, brightness, contrast, saturation))
    n = len(images)

    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], dim=1),
                         torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1)
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    x = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                      align_corners=False)

    def per_image(v: torch.Tensor) -> torch.Tensor:
        return v.to(images.device, images.dtype).reshape(n, 1, 1, 1)

    x = x + per_image(brightness)
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * per_image(contrast) + mean
    if channels == 3:
        luma = x.mean(dim=1, keepdim=True)
        x = (x - luma) * per_image(saturation) + luma
    return x


@dataclass
class AdaptiveProbability:
    """ADA's controller: accumulate ``sign(D(real))`` and, every ``interval`` steps, move
    ``p`` toward keeping ``r_t`` at ``target``."""

    target: float = 0.6
    interval: int = 4
    speed_kimg: float = 500.0
    p: float = 0.0
    sign_sum: float = 0.0
    count: float = 0.0

    def observe(self, real_logits: torch.Tensor) -> None:
        """Add one batch of the discriminator's logits on (augmented) real images."""
        self.sign_sum += float(torch.sign(real_logits.detach().float()).sum())
        self.count += real_logits.numel()

    def due(self, step: int) -> bool:
        """Whether ``p`` is updated after ``step`` (counted from 1)."""
        return step % self.interval == 0 and self.count > 0

    def update(self, batch: int, sign_sum: float, count: float) -> float:
        """Move ``p`` by the heuristic on the totals of the last interval (summed over
        processes when distributed); return ``r_t`` and reset the totals."""
        r_t = sign_sum / count
        step = batch * self.interval / (self.speed_kimg * 1000)
        direction = (r_t > self.target) - (r_t < self.target)
        self.p = min(max(self.p + direction * step, 0.0), 1.0)
        self.sign_sum = self.count = 0.0
        return r_t
