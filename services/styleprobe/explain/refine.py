"""Optimisation refinement of an encoding: a few gradient steps on ``w`` after the encoder.

The encoder's ``w = E(x)`` starts the search; Adam then lowers the pixel error of
``G(w)`` against ``x``, with a prior that keeps ``w`` within a few standard deviations of
where the encoder put it (measured in the latent distribution's per-dimension spread),
so that the refined code stays in W, where the probed directions are valid. ``w`` stays
one code for all layers (W, not W+): the exported synthesis takes exactly that.

It needs a differentiable synthesis (the eager generator, or the exported TorchScript
module, which torch can differentiate), so it runs where the model runs (the GPU queue),
not through Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class RefineSettings:
    """How far to refine: steps of Adam at ``lr`` (in latent std units), and the weight of
    the prior ``mean(((w - E(x)) / std)^2)`` against the pixel MSE (images in [-1, 1])."""

    steps: int = 50
    lr: float = 0.05
    prior_weight: float = 0.01
    batch: int = 128


def refine(synthesis: nn.Module, w: torch.Tensor, images: torch.Tensor,
           latent_std: torch.Tensor, settings: RefineSettings | None = None) -> torch.Tensor:
    """Refined codes ``[N, w_dim]`` for ``images`` (NCHW in [-1, 1]) starting at ``w``;
    ``synthesis`` maps ``w [N, w_dim]`` to images, ``latent_std`` is W's spread per dimension."""
    settings = settings or RefineSettings()
    out = []
    for start in range(0, len(w), settings.batch):
        w0 = w[start:start + settings.batch].detach()
        x = images[start:start + settings.batch]
        offset = torch.zeros_like(w0, requires_grad=True)  # in std units
        opt = torch.optim.Adam([offset], lr=settings.lr)
        for _ in range(settings.steps):
            rec = synthesis(w0 + offset * latent_std)
            loss = ((rec - x) ** 2).mean() + settings.prior_weight * offset.square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append(w0 + offset.detach() * latent_std)
    return torch.cat(out)
