"""Optimisation refinement of encodings: it lowers the reconstruction error from the
encoder's starting point, and its prior holds the codes near that start."""

from __future__ import annotations

import torch
from torch import nn

from styleprobe.explain.refine import RefineSettings, refine


class LinearSynthesis(nn.Module):
    """w [N, 8] -> image [N, 1, 4, 4]: a differentiable stand-in for the synthesis."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(w @ self.weight.T).reshape(-1, 1, 4, 4)


def test_refinement_lowers_the_pixel_error_and_the_prior_holds_the_codes() -> None:
    torch.manual_seed(0)
    synthesis = LinearSynthesis().requires_grad_(False)
    truth = torch.randn(10, 8) * 0.5
    images = synthesis(truth)
    start = truth + torch.randn(10, 8) * 0.5  # an encoder's imperfect guess
    std = torch.full((8,), 0.5)

    def error(w: torch.Tensor) -> float:
        return float(((synthesis(w) - images) ** 2).mean())

    free = refine(synthesis, start, images, std, RefineSettings(steps=100, prior_weight=0.0))
    held = refine(synthesis, start, images, std, RefineSettings(steps=100, prior_weight=10.0))
    assert error(free) < 0.2 * error(start)
    assert (held - start).norm() < 0.5 * (free - start).norm()
    assert error(held) < error(start)
    assert refine(synthesis, start, images, std, RefineSettings(steps=0)).equal(start)
    batched = refine(synthesis, start, images, std, RefineSettings(steps=5, batch=3))
    assert batched.shape == start.shape
