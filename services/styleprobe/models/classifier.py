"""Classifier: the black box that StyleProbe explains.

This small CNN is only the bundled example. The rest of the system never assumes it:
any TorchScript module that maps ``image [N, C, R, R]`` in ``[-1, 1]`` to
``logits [N, K]`` meets the contract.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """image [N, C, R, R] in [-1, 1] -> logits [N, num_classes]."""

    def __init__(self, resolution: int, channels: int, num_classes: int = 2,
                 width: int = 16) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        layers: list[nn.Module] = []
        ch_in, ch, res = channels, width, resolution
        while res > 4:  # one conv per resolution, halving until 4x4
            layers += [nn.Conv2d(ch_in, ch, 3, 1, 1), nn.BatchNorm2d(ch), nn.ReLU(),
                       nn.MaxPool2d(2)]
            ch_in, ch, res = ch, min(ch * 2, 128), res // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2),
                                  nn.Linear(ch_in, num_classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        assert image.shape[1:] == (self.channels, self.resolution, self.resolution), (
            f"image must be [N, {self.channels}, {self.resolution}, {self.resolution}]")
        return self.head(self.features(image))
