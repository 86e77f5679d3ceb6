"""Pictures of a traversal: frames, animation, annotated strip, probability plot,
difference maps, and one self-contained HTML report. Images are (R, R, C) in [0, 1];
every function returns encoded bytes (or HTML text) and touches no file."""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib import colormaps, font_manager
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from styleprobe.explain.result import ExplanationResult
from styleprobe.templates import render_template

# Images one after another: a list of (R, R, C) arrays, or one (N, R, R, C) array.
Frames = Sequence[np.ndarray] | np.ndarray

DISPLAY_SIZE = 128  # frames are enlarged (nearest neighbour) to at least this many pixels
DIFF_COLORMAP = "RdBu_r"  # red: brighter than the reconstruction, blue: darker
WARNING_RED = (200, 0, 0)


def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib; it has λ) at ``size`` pixels."""
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def to_pil(image: np.ndarray, display: bool = True) -> Image.Image:
    """An (R, R, C) [0, 1] image (C = 1 or 3; or uint8 RGB) as a Pillow image."""
    pixels = image if image.dtype == np.uint8 else np.round(np.clip(image, 0, 1) * 255)
    pixels = pixels.astype(np.uint8)
    pil = Image.fromarray(pixels[..., 0], "L") if pixels.shape[2] == 1 else Image.fromarray(
        pixels, "RGB")
    if display:
        scale = max(1, math.ceil(DISPLAY_SIZE / pil.width))
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    return pil


def png(image: np.ndarray, display: bool = True) -> bytes:
    """PNG bytes of one image (enlarged for display unless ``display`` is False)."""
    buffer = io.BytesIO()
    to_pil(image, display).save(buffer, format="PNG")
    return buffer.getvalue()


def animation(frames: Frames, frame_ms: int = 120) -> bytes:
    """An endlessly looping GIF that walks the traversal forth and back."""
    pils = [to_pil(f).convert("RGB") for f in frames]
    sequence = pils + pils[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(buffer, format="GIF", save_all=True, append_images=sequence[1:],
                     duration=frame_ms, loop=0)
    return buffer.getvalue()


def strip(frames: Frames, lambdas: Sequence[float],
          probabilities: Sequence[float], target: str, threshold: float,
          warning: str | None = None) -> bytes:
    """Frames side by side, each with its λ and target probability printed below; the
    probability is red where the target is predicted. ``warning`` is printed on top."""
    tiles = [to_pil(f).convert("RGB") for f in frames]
    size = tiles[0].width
    font_size = max(10, size // 10)
    font = _font(font_size)
    line = font_size + 4
    width = size * len(tiles)
    notes = textwrap.wrap(warning or "", width=max(20, int(width / (0.6 * font_size))))
    top = len(notes) * line + (6 if notes else 0)
    canvas = Image.new("RGB", (width, top + size + 2 * line + 4), "white")
    draw = ImageDraw.Draw(canvas)
    for row, note in enumerate(notes):
        draw.text((4, 3 + row * line), note, fill=WARNING_RED, font=font)
    for i, (tile, lam, prob) in enumerate(zip(tiles, lambdas, probabilities, strict=True)):
        x = i * size
        canvas.paste(tile, (x, top))
        colour = WARNING_RED if prob >= threshold else (0, 0, 0)
        draw.text((x + 3, top + size + 2), f"λ {lam:+.2f}", fill=(0, 0, 0), font=font)
        draw.text((x + 3, top + size + 2 + line), f"{target} {prob:.3f}", fill=colour, font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def probability_plot(lambdas: Sequence[float], probabilities: Sequence[float], target: str,
                     threshold: float, flip_lambda: float | None = None,
                     input_probability: float | None = None,
                     warning: str | None = None) -> bytes:
    """PNG plot of the target probability against λ, with the threshold and the flip."""
    fig = Figure(figsize=(6, 3.6), dpi=100)
    ax = fig.add_subplot()
    ax.plot(lambdas, probabilities, "o-", color="tab:blue", label=f"P({target}) along traversal")
    ax.axhline(threshold, color="grey", linestyle="--", label=f"threshold {threshold:g}")
    if input_probability is not None:
        ax.plot([0], [input_probability], "s", color="black", label="input image")
    if flip_lambda is not None:
        ax.axvline(flip_lambda, color="tab:red", linestyle=":",
                   label=f"flip at λ = {flip_lambda:+.2f}")
    ax.set_xlabel("λ")
    ax.set_ylabel(f"P({target})")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="best", fontsize=8)
    if warning:
        ax.set_title(textwrap.fill(warning, 90), color="darkred", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def difference_maps(frames: Frames,
                    reconstruction: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Signed differences ``frame - reconstruction`` (channel mean) as RGB uint8 images on
    one shared diverging scale; and that scale (the largest absolute difference)."""
    diffs = [np.mean(f - reconstruction, axis=2) for f in frames]
    scale = max(float(np.max(np.abs(diffs))), 1e-6)
    cmap = colormaps[DIFF_COLORMAP]
    maps = [(cmap(0.5 + 0.5 * d / scale)[..., :3] * 255).round().astype(np.uint8) for d in diffs]
    return maps, scale


def report_html(result: ExplanationResult, images: dict[str, bytes]) -> str:
    """One HTML page with every number of ``result`` and ``images`` inlined as data URIs.

    ``images`` names: input, reconstruction, animation, strip, plot, differences.
    """
    d = result.direction
    numbers = [
        ("Input SHA-256", result.input.sha256),
        ("Input", ", ".join(f"{k}: {v}" for k, v in result.input.description.items())),
        (f"P({result.target}) on input", f"{result.prediction_input:.4f}"),
        (f"P({result.target}) on reconstruction", f"{result.prediction_reconstruction:.4f}"),
        ("Pixel MSE of reconstruction",
         f"{result.quality.pixel_mse:.5f} (gate {result.quality.max_pixel_mse:.5f})"),
        ("Counterfactual", result.flip_text()),
        ("Direction key", d.key),
        ("Direction held-out AUC / accuracy", f"{d.auc:.4f} / {d.accuracy:.4f}"),
        ("Probe samples", f"{d.samples} (positive share {d.positive_share:.3f})"),
        ("Orthogonal to", ", ".join(f"{k} (cosine {v:+.3f})"
                                    for k, v in d.orthogonalized_against.items()) or "nothing"),
        *[(f"Model: {kind}", version) for kind, version in result.models.items()],
    ]
    return render_template(
        "explanation.html.j2", title=f"StyleProbe: {result.model_set}, target {result.target}",
        result=result, images=images, numbers=numbers,
        traversal=zip(result.lambdas, result.probabilities, strict=True))
