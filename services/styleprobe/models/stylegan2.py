"""StyleGAN2 (Karras et al., 2020) in plain PyTorch, after NVlabs' ``networks.py``.

Mapping network (z -> w) with equalized learning rate and a tracked average w for
truncation; synthesis network with a learned constant input, modulated convolutions
with weight demodulation, per-layer noise inputs and a skip architecture (each
resolution adds its ``toRGB`` output to the upsampled image); a residual discriminator
with minibatch standard deviation.

Upsampling is bilinear, which for a factor of two is the separable ``[1, 3, 3, 1]`` FIR
filter of the paper; the discriminator downsamples with a 2x2 box filter, which is
cheaper on a CPU. Images are NCHW in ``[-1, 1]``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)


@dataclass
class GeneratorConfig:
    """Architecture of a generator: resolution, widths, latent sizes."""

    resolution: int = 64
    channels: int = 1
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 4096
    channel_max: int = 512
    channel_min: int = 16

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution)
        if self.resolution < 8 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")

    def width(self, res: int) -> int:
        """Feature maps at a resolution: ``channel_base / res``, clamped."""
        return max(self.channel_min, min(self.channel_max, self.channel_base // res))

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Number of w vectors the synthesis network consumes (two per block + toRGB)."""
        return 2 * len(self.block_resolutions)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class FullyConnected(nn.Module):
    """Linear layer with equalized learning rate and optional leaky-ReLU."""

    def __init__(self, in_features: int, out_features: int, activation: bool = True,
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation:
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


class MappingNetwork(nn.Module):
    """z -> w: normalize z, then an MLP; tracks the average w for truncation."""

    w_avg: torch.Tensor  # a buffer

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.995) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.w_avg_beta = z_dim, w_dim, w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(a, b, lr_multiplier=lr_multiplier)
            for a, b in itertools.pairwise(features)
        )
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z must be [N, {self.z_dim}]"
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.layers:
            x = layer(x)
        if self.training:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, padding: int = 1) -> torch.Tensor:
    """Convolve each sample with its own style-scaled (and demodulated) weights.

    Computed as scale-input, shared convolution, scale-output (NVlabs' non-fused path),
    which equals the per-sample grouped convolution and runs much faster on a CPU.
    """
    n, in_ch = x.shape[0], x.shape[1]
    assert styles.shape == (n, in_ch), f"styles {tuple(styles.shape)} != {(n, in_ch)}"
    x = x * styles.reshape(n, in_ch, 1, 1)
    x = F.conv2d(x, weight, padding=padding)
    if demodulate:
        wgt = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)
        dcoefs = (wgt.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * dcoefs.reshape(n, -1, 1, 1)
    return x


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution, noise input, bias, leaky-ReLU; optional 2x upsampling."""

    noise_const: torch.Tensor  # a buffer

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: bool = False) -> None:
        super().__init__()
        self.up, self.resolution = up, resolution
        self.affine = FullyConnected(w_dim, in_channels, activation=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        return self.forward_styles(x, self.affine(w), noise_mode)

    def forward_styles(self, x: torch.Tensor, styles: torch.Tensor,
                       noise_mode: str = "random") -> torch.Tensor:
        """The layer given its StyleSpace coordinates ``styles [N, in_channels]``."""
        if self.up:
            x = upsample2d(x)
        x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=1)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        x = x + self.bias.reshape(1, -1, 1, 1)
        return torch.clamp(F.leaky_relu(x, 0.2) * LRELU_GAIN, -256.0, 256.0)


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, activation=False, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.forward_styles(x, self.affine(w))

    def forward_styles(self, x: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
        """The layer given its StyleSpace coordinates (the affine output, before the gain)."""
        x = modulated_conv2d(x, self.weight, styles * self.weight_gain, demodulate=False,
                             padding=0)
        return x + self.bias.reshape(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution: (constant input | upsampling conv), conv, toRGB skip."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int) -> None:
        super().__init__()
        self.resolution = resolution
        if resolution == 4:
            self.const: nn.Parameter | None = nn.Parameter(torch.randn(out_channels, 4, 4))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self.const is not None:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            assert x is not None and self.conv0 is not None
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, 2])
        img = y if img is None else upsample2d(img) + y
        return x, img

    def style_layers(self) -> list[tuple[str, SynthesisLayer | ToRGB, int]]:
        """The layers that read a style, in StyleSpace order: (name, layer, index of the
        block's ``ws`` slice it reads)."""
        convs: list[tuple[str, SynthesisLayer | ToRGB, int]] = (
            [("conv1", self.conv1, 0)] if self.conv0 is None
            else [("conv0", self.conv0, 0), ("conv1", self.conv1, 1)])
        return [*convs, ("torgb", self.torgb, 2)]

    def forward_styles(self, x: torch.Tensor | None, img: torch.Tensor | None,
                       styles: list[torch.Tensor], noise_mode: str
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block given the styles of :meth:`style_layers`, in that order."""
        if self.const is not None:
            x = self.const.unsqueeze(0).expand(styles[0].shape[0], -1, -1, -1)
            x = self.conv1.forward_styles(x, styles[0], noise_mode)
        else:
            assert x is not None and self.conv0 is not None
            x = self.conv0.forward_styles(x, styles[0], noise_mode)
            x = self.conv1.forward_styles(x, styles[1], noise_mode)
        y = self.torgb.forward_styles(x, styles[-1])
        img = y if img is None else upsample2d(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, R, R] (unbounded; ~[-1, 1] once trained)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        blocks = []
        for res in cfg.block_resolutions:
            in_ch = cfg.width(res // 2) if res > 4 else 0
            blocks.append(SynthesisBlock(in_ch, cfg.width(res), cfg.w_dim, res, cfg.channels))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        cfg = self.cfg
        assert ws.ndim == 3 and ws.shape[1:] == (cfg.num_ws, cfg.w_dim), (
            f"ws must be [N, {cfg.num_ws}, {cfg.w_dim}], got {tuple(ws.shape)}")
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        for i, block in enumerate(self.blocks):
            # Block i reads ws[2i-1 : 2i+2]: its convs and its toRGB (the first has one conv).
            start = max(0, 2 * i - 1)
            x, img = block(x, img, ws[:, start:start + 3], noise_mode)
        assert img is not None
        return img

    def style_blocks(self) -> list[SynthesisBlock]:
        """The blocks, typed."""
        return [cast(SynthesisBlock, block) for block in self.blocks]

    def style_layout(self) -> list[tuple[str, int]]:
        """StyleSpace: every layer that reads a style (``b<res>.conv0|conv1|torgb``) and its
        number of channels, in the order of :meth:`styles`."""
        return [(f"b{block.resolution}.{name}", layer.affine.weight.shape[0])
                for block in self.style_blocks() for name, layer, _ in block.style_layers()]

    def styles(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> the StyleSpace coordinates [N, S]: every layer's
        affine output (its per-channel modulation), concatenated in :meth:`style_layout`
        order."""
        out = []
        for i, block in enumerate(self.style_blocks()):
            start = max(0, 2 * i - 1)
            out += [layer.affine(ws[:, start + offset])
                    for _, layer, offset in block.style_layers()]
        return torch.cat(out, dim=1)

    def synthesize(self, styles: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        """styles [N, S] (see :meth:`styles`) -> image: the network with its StyleSpace
        coordinates given instead of computed from ws."""
        sizes = [size for _, size in self.style_layout()]
        assert styles.ndim == 2 and styles.shape[1] == sum(sizes), (
            f"styles must be [N, {sum(sizes)}], got {tuple(styles.shape)}")
        parts = list(torch.split(styles, sizes, dim=1))
        x: torch.Tensor | None = None
        img: torch.Tensor | None = None
        for block in self.style_blocks():
            count = len(block.style_layers())
            x, img = block.forward_styles(x, img, parts[:count], noise_mode)
            parts = parts[count:]
        assert img is not None
        return img


class Generator(nn.Module):
    """Mapping and synthesis together: z -> image."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.mapping_layers)
        self.synthesis = SynthesisNetwork(cfg)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] -> ws [N, num_ws, w_dim] (the same style at every layer)."""
        return w.unsqueeze(1).repeat(1, self.cfg.num_ws, 1)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                noise_mode: str = "random") -> torch.Tensor:
        w = self.mapping(z, truncation_psi)
        return self.synthesis(self.broadcast(w), noise_mode)


def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the average per-group feature standard deviation as one extra channel."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    while n % g:
        g -= 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=[1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate, optional activation and 2x downsampling."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, activation: bool = True,
                 down: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.activation, self.down, self.padding = activation, down, kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        if self.down:
            x = downsample2d(x)
        if self.activation:
            x = F.leaky_relu(x, 0.2) * LRELU_GAIN
        return x


class DiscriminatorBlock(nn.Module):
    """Residual block: two convs (second downsamples) plus a 1x1 downsampling skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, activation=False, down=True,
                                bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return (x + y) * math.sqrt(0.5)


class Discriminator(nn.Module):
    """image [N, C, R, R] -> realness logit [N, 1]; residual architecture."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        res = cfg.resolution
        self.fromrgb = Conv2dLayer(cfg.channels, cfg.width(res), 1)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(cfg.width(r), cfg.width(r // 2))
            for r in reversed(cfg.block_resolutions[1:])
        )
        ch = cfg.width(4)
        self.conv = Conv2dLayer(ch + 1, ch, 3)
        self.fc = FullyConnected(ch * 16, ch)
        self.out = FullyConnected(ch, 1, activation=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        assert img.shape[1:] == (cfg.channels, cfg.resolution, cfg.resolution), (
            f"image must be [N, {cfg.channels}, {cfg.resolution}, {cfg.resolution}]")
        x = self.fromrgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.conv(minibatch_stddev(x))
        return self.out(self.fc(x.flatten(1)))


def seeded_z(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """Deterministic standard-normal latents, identical across platforms."""
    z = np.random.default_rng(seed).standard_normal((n, z_dim)).astype(np.float32)
    return torch.from_numpy(z)
