"""Network shapes, the modulated convolution, truncation, and shape checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import (
    Discriminator,
    Generator,
    GeneratorConfig,
    MappingNetwork,
    SynthesisNetwork,
    modulated_conv2d,
    seeded_z,
)

torch.set_num_threads(1)
RESOLUTIONS = [8, 16, 32]
CHANNELS = [1, 3]


def tiny_config(resolution: int, channels: int) -> GeneratorConfig:
    return GeneratorConfig(resolution=resolution, channels=channels, z_dim=12, w_dim=16,
                           mapping_layers=2, channel_base=128, channel_max=16, channel_min=8)


@pytest.mark.parametrize(("resolution", "num_ws"), [(8, 4), (16, 6), (32, 8), (64, 10)])
def test_num_ws_is_two_per_block(resolution: int, num_ws: int) -> None:
    assert tiny_config(resolution, 1).num_ws == num_ws


def test_mapping_shape() -> None:
    mapping = MappingNetwork(z_dim=12, w_dim=16, num_layers=3)
    assert mapping(torch.randn(5, 12)).shape == (5, 16)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_generator_and_discriminator_shapes(resolution: int, channels: int) -> None:
    cfg = tiny_config(resolution, channels)
    G = Generator(cfg)
    ws = torch.randn(3, cfg.num_ws, cfg.w_dim)
    assert SynthesisNetwork(cfg)(ws).shape == (3, channels, resolution, resolution)
    images = G(torch.randn(3, cfg.z_dim))
    assert images.shape == (3, channels, resolution, resolution)
    assert torch.isfinite(images).all()
    assert G.broadcast(torch.randn(3, cfg.w_dim)).shape == (3, cfg.num_ws, cfg.w_dim)
    assert Discriminator(cfg)(images).shape == (3, 1)


@pytest.mark.parametrize("resolution", RESOLUTIONS)
@pytest.mark.parametrize("channels", CHANNELS)
def test_encoder_and_classifier_shapes(resolution: int, channels: int) -> None:
    images = torch.rand(3, channels, resolution, resolution) * 2 - 1
    encoder = Encoder(resolution, channels, w_dim=16, width=8)
    assert encoder(images).shape == (3, 16)
    classifier = Classifier(resolution, channels, num_classes=4, width=8).eval()
    assert classifier(images).shape == (3, 4)


def test_untrained_encoder_returns_the_average_w() -> None:
    w_avg = torch.randn(16)
    encoder = Encoder(8, 1, w_dim=16, width=8, w_avg=w_avg)
    torch.nn.init.zeros_(encoder.head[-1].weight)
    torch.nn.init.zeros_(encoder.head[-1].bias)
    out = encoder(torch.zeros(2, 1, 8, 8))
    torch.testing.assert_close(out, w_avg.expand(2, -1))


def grouped_modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                             demodulate: bool, padding: int) -> torch.Tensor:
    """The paper's definition: each sample convolved with its own modulated weights."""
    n, in_ch, h, w = x.shape
    out_ch = weight.shape[0]
    per_sample = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        per_sample = per_sample * (per_sample.square().sum(dim=[2, 3, 4], keepdim=True)
                                   + 1e-8).rsqrt()
    out = F.conv2d(x.reshape(1, n * in_ch, h, w),
                   per_sample.reshape(n * out_ch, in_ch, *weight.shape[2:]),
                   padding=padding, groups=n)
    return out.reshape(n, out_ch, *out.shape[2:])


@pytest.mark.parametrize(("kernel", "padding", "demodulate"),
                         [(3, 1, True), (3, 1, False), (1, 0, False), (1, 0, True)])
def test_modulated_conv_equals_grouped_convolution(kernel: int, padding: int,
                                                   demodulate: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 8, 8, generator=gen)
    weight = torch.randn(5, 6, kernel, kernel, generator=gen)
    styles = torch.randn(4, 6, generator=gen) + 1.0
    got = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=padding)
    want = grouped_modulated_conv2d(x, weight, styles, demodulate, padding)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_truncation_psi_zero_gives_the_average_w() -> None:
    mapping = MappingNetwork(z_dim=12, w_dim=16, num_layers=2)
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(16))
    mapping.eval()
    w = mapping(torch.randn(4, 12), truncation_psi=0.0)
    torch.testing.assert_close(w, mapping.w_avg.expand(4, -1))
    half = mapping(z := seeded_z(4, 12, seed=1), truncation_psi=0.5)
    torch.testing.assert_close(half, (mapping(z) + mapping.w_avg) / 2)


def test_mapping_tracks_the_average_w_only_in_training() -> None:
    mapping = MappingNetwork(z_dim=12, w_dim=16, num_layers=2)
    mapping.eval()
    mapping(torch.randn(8, 12))
    assert mapping.w_avg.abs().sum() == 0
    mapping.train()
    mapping(torch.randn(8, 12))
    assert mapping.w_avg.abs().sum() > 0


def test_constant_noise_makes_synthesis_deterministic() -> None:
    cfg = tiny_config(16, 1)
    synthesis = SynthesisNetwork(cfg)
    with torch.no_grad():
        for p in synthesis.parameters():
            if p.ndim == 0:  # noise strengths start at zero; make the noise matter
                p.fill_(0.5)
    ws = torch.randn(2, cfg.num_ws, cfg.w_dim)
    torch.testing.assert_close(synthesis(ws, "const"), synthesis(ws, "const"))
    assert not torch.equal(synthesis(ws, "random"), synthesis(ws, "random"))


def test_seeded_z_is_reproducible() -> None:
    torch.testing.assert_close(seeded_z(3, 12, seed=5), seeded_z(3, 12, seed=5))
    assert not torch.equal(seeded_z(3, 12, seed=5), seeded_z(3, 12, seed=6))


@pytest.mark.parametrize(("resolution", "channels"), [(12, 1), (4, 1), (16, 2)])
def test_bad_generator_configs_raise(resolution: int, channels: int) -> None:
    with pytest.raises(ValueError):
        GeneratorConfig(resolution=resolution, channels=channels)


def test_bad_input_shapes_raise() -> None:
    cfg = tiny_config(16, 1)
    G = Generator(cfg)
    with pytest.raises(AssertionError):
        G.mapping(torch.randn(2, cfg.z_dim + 1))
    with pytest.raises(AssertionError):
        G.synthesis(torch.randn(2, cfg.num_ws - 1, cfg.w_dim))
    with pytest.raises(AssertionError):
        Discriminator(cfg)(torch.randn(2, 3, 16, 16))
    with pytest.raises(AssertionError):
        Encoder(16, 1, w_dim=16, width=8)(torch.randn(2, 1, 32, 32))
    with pytest.raises(AssertionError):
        Classifier(16, 3, width=8)(torch.randn(2, 1, 16, 16))
    with pytest.raises(AssertionError):
        modulated_conv2d(torch.randn(2, 4, 8, 8), torch.randn(3, 4, 3, 3), torch.randn(2, 5))
