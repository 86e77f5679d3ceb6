"""Rendering without matplotlib on the hot path: the same pictures, drawn with Pillow."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from PIL import Image

from styleprobe.explain import render


def test_difference_maps_use_the_diverging_colour_map() -> None:
    rng = np.random.default_rng(0)
    frames = rng.random((3, 8, 8, 1)).astype(np.float32)
    reconstruction = rng.random((8, 8, 1)).astype(np.float32)
    maps, scale = render.difference_maps(frames, reconstruction)
    diffs = np.mean(frames - reconstruction, axis=3)
    assert scale == np.max(np.abs(diffs))
    want = (colormaps[render.DIFF_COLORMAP](0.5 + 0.5 * diffs / scale)[..., :3] * 255).round()
    assert np.array_equal(np.stack(maps), want.astype(np.uint8))


def test_animation_walks_forth_and_back_in_one_palette() -> None:
    rng = np.random.default_rng(1)
    for channels, mode in ((1, "L"), (3, "P")):
        frames = rng.random((5, 16, 16, channels)).astype(np.float32)
        gif = Image.open(io.BytesIO(render.animation(render.enlarge(frames))))
        assert gif.n_frames == 8 and gif.size == (128, 128) and gif.info["loop"] == 0
        assert gif.mode in (mode, "P")
        gif.seek(2)
        shown = np.asarray(gif.convert("L" if channels == 1 else "RGB"), np.float32)
        original = np.round(frames[2] * 255).repeat(8, 0).repeat(8, 1)
        error = np.abs(shown - (original[..., 0] if channels == 1 else original)).mean()
        assert error < (0.5 if channels == 1 else 12)  # grayscale exact, colour quantized


def test_probability_plot_is_a_png_of_its_size() -> None:
    lambdas = list(np.linspace(-3, 3, 17))
    probabilities = list(1 / (1 + np.exp(-np.asarray(lambdas))))
    data = render.probability_plot(lambdas, probabilities, "OA", 0.5, -0.4, 0.6, "UNRELIABLE")
    plot = Image.open(io.BytesIO(data))
    assert plot.format == "PNG" and plot.size == render.PLOT_SIZE
    pixels = np.asarray(plot.convert("RGB"))
    assert (pixels == render.PLOT_BLUE).all(axis=2).sum() > 100  # the curve is drawn
    assert (pixels == render.WARNING_RED).all(axis=2).sum() > 10  # and the warning
