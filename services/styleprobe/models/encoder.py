"""Encoder: image -> w, a small ResNet-style CNN that inverts the generator."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a (strided) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(8, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.norm1(self.conv1(x)), 0.2)
        y = self.norm2(self.conv2(y))
        return F.leaky_relu(y + self.shortcut(x), 0.2)


class Encoder(nn.Module):
    """image [N, C, R, R] in [-1, 1] -> w [N, w_dim].

    Predicts an offset from the generator's average w, which it is given at
    construction, so an untrained encoder already returns the mean face.
    """

    w_avg: torch.Tensor  # a buffer

    def __init__(self, resolution: int, channels: int, w_dim: int, width: int = 32,
                 w_avg: torch.Tensor | None = None) -> None:
        super().__init__()
        self.resolution, self.channels, self.w_dim = resolution, channels, w_dim
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, 1, 1)]
        ch, res = width, resolution
        while res > 4:  # one strided residual block per resolution, down to 4x4
            nxt = min(ch * 2, 128)
            layers.append(ResidualBlock(ch, nxt, stride=2))
            ch, res = nxt, res // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, 256), nn.LeakyReLU(0.2),
                                  nn.Linear(256, w_dim))
        self.register_buffer("w_avg", torch.zeros(w_dim) if w_avg is None else w_avg.clone())
        assert int(math.log2(resolution)) == math.log2(resolution)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[1:] == (self.channels, self.resolution, self.resolution), (
            f"image must be [N, {self.channels}, {self.resolution}, {self.resolution}]")
        return self.w_avg + self.head(self.features(image))
