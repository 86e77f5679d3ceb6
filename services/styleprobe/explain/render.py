"""Pictures of a traversal: frames, animation, annotated strip, probability plot,
difference maps, and one self-contained HTML report. Images are (R, R, C) in [0, 1];
every function returns encoded bytes (or HTML text) and touches no file.

Everything is drawn and encoded with Pillow, fast: PNGs at zlib level 1
(:data:`PNG_COMPRESS_LEVEL`), the animation's frames converted once and given one shared
palette (grayscale frames need none), the plot drawn directly (no matplotlib: it took a
quarter of the stage), and the difference maps coloured through a 256-entry table made
once. :func:`enlarge` converts frames once for all the pictures that show them.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from styleprobe.explain.result import ExplanationResult
from styleprobe.templates import render_template

# Images one after another: a list of (R, R, C) arrays, or one (N, R, R, C) array.
Frames = Sequence[np.ndarray] | np.ndarray

DISPLAY_SIZE = 128  # frames are enlarged (nearest neighbour) to at least this many pixels
DIFF_COLORMAP = "RdBu_r"  # red: brighter than the reconstruction, blue: darker
WARNING_RED = (200, 0, 0)
PNG_COMPRESS_LEVEL = 1  # zlib's fastest: several times faster than Pillow's 6, files ~10% larger
Picture = Image.Image | np.ndarray  # a frame converted by :func:`enlarge`, or an array


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (shipped with matplotlib; it has λ) at ``size`` pixels, loaded once."""
    from matplotlib import font_manager  # only to find the font file, once per size

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


@cache
def _diff_colours() -> np.ndarray:
    """The diverging colour map as a (256, 3) uint8 table, made once."""
    from matplotlib import colormaps  # only to read the table, once per process

    return (colormaps[DIFF_COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(
        np.uint8)


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


def enlarge(frames: Frames) -> list[Image.Image]:
    """Each frame converted to a Pillow image, enlarged for display: once, for every
    picture that shows them (:func:`png`, :func:`animation`, :func:`strip`)."""
    return [to_pil(frame) for frame in frames]


def _pil(picture: Picture) -> Image.Image:
    return picture if isinstance(picture, Image.Image) else to_pil(picture)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def png(image: Picture, display: bool = True) -> bytes:
    """PNG bytes of one image (enlarged for display unless ``display`` is False)."""
    return _png_bytes(image if isinstance(image, Image.Image) else to_pil(image, display))


def animation(frames: Frames | Sequence[Image.Image], frame_ms: int = 120) -> bytes:
    """An endlessly looping GIF that walks the traversal forth and back. Grayscale
    frames are written as they are; colour frames share one adaptive palette, computed
    once from all of them."""
    pils = [_pil(frame) for frame in frames]
    if any(pil.mode != "L" for pil in pils):
        rgb = [pil.convert("RGB") for pil in pils]
        sheet = Image.new("RGB", (rgb[0].width, rgb[0].height * len(rgb)))
        for i, pil in enumerate(rgb):
            sheet.paste(pil, (0, i * pil.height))
        palette = sheet.quantize(256, method=Image.Quantize.MEDIANCUT)
        pils = [pil.quantize(palette=palette, dither=Image.Dither.NONE) for pil in rgb]
    sequence = pils + pils[-2:0:-1]
    buffer = io.BytesIO()
    sequence[0].save(buffer, format="GIF", save_all=True, append_images=sequence[1:],
                     duration=frame_ms, loop=0)
    return buffer.getvalue()


def strip(frames: Frames | Sequence[Image.Image], lambdas: Sequence[float],
          probabilities: Sequence[float], target: str, threshold: float,
          warning: str | None = None) -> bytes:
    """Frames side by side, each with its λ and target probability printed below; the
    probability is red where the target is predicted. ``warning`` is printed on top."""
    tiles = [_pil(f).convert("RGB") for f in frames]
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
    return _png_bytes(canvas)


PLOT_SIZE = (600, 360)  # pixels
PLOT_BLUE, PLOT_GREY, PLOT_RED = (31, 119, 180), (128, 128, 128), (214, 39, 40)


def probability_plot(lambdas: Sequence[float], probabilities: Sequence[float], target: str,
                     threshold: float, flip_lambda: float | None = None,
                     input_probability: float | None = None,
                     warning: str | None = None) -> bytes:
    """PNG plot of the target probability against λ, with the threshold and the flip."""
    width, height = PLOT_SIZE
    font, small = _font(13), _font(11)
    notes = textwrap.wrap(warning or "", 90)
    top = 12 + 14 * len(notes)
    left, right, bottom = 62, width - 16, height - 46
    canvas = Image.new("RGB", PLOT_SIZE, "white")
    draw = ImageDraw.Draw(canvas)
    for row, note in enumerate(notes):
        draw.text((left, 4 + 14 * row), note, fill=WARNING_RED, font=small)
    xs = [float(v) for v in lambdas]
    low, high = min([*xs, 0.0]), max([*xs, 0.0])
    pad = 0.05 * (high - low or 1.0)
    low, high = low - pad, high + pad

    def at(lam: float, p: float) -> tuple[float, float]:
        return (left + (lam - low) / (high - low) * (right - left),
                bottom - (p + 0.02) / 1.04 * (bottom - top))

    for tick in _ticks(low, high):
        x, _ = at(tick, 0)
        draw.line([(x, bottom), (x, bottom + 4)], fill="black")
        draw.text((x, bottom + 6), f"{tick:g}", fill="black", font=small, anchor="ma")
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        _, y = at(low, tick)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((left - 6, y), f"{tick:g}", fill="black", font=small, anchor="rm")
    draw.text(((left + right) / 2, height - 18), "λ", fill="black", font=font, anchor="ma")
    label = Image.new("RGB", (int(font.getlength(f"P({target})")) + 4, 18), "white")
    ImageDraw.Draw(label).text((2, 1), f"P({target})", fill="black", font=font)
    rotated = label.rotate(90, expand=True)
    canvas.paste(rotated, (6, int((top + bottom - rotated.height) / 2)))
    y_threshold = at(low, threshold)[1]
    _dashed(draw, (left, y_threshold), (right, y_threshold), PLOT_GREY, 6)
    points = [at(lam, float(p)) for lam, p in zip(xs, probabilities, strict=True)]
    draw.line(points, fill=PLOT_BLUE, width=2)
    for x, y in points:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=PLOT_BLUE)
    legend = [(PLOT_BLUE, f"P({target}) along traversal"),
              (PLOT_GREY, f"threshold {threshold:g}")]
    if input_probability is not None:
        x, y = at(0.0, input_probability)
        draw.rectangle([x - 4, y - 4, x + 4, y + 4], fill="black")
        legend.append(((0, 0, 0), "input image"))
    if flip_lambda is not None:
        x = at(flip_lambda, 0)[0]
        _dashed(draw, (x, top), (x, bottom), PLOT_RED, 2)
        legend.append((PLOT_RED, f"flip at λ = {flip_lambda:+.2f}"))
    draw.rectangle([left, top, right, bottom], outline="black")
    for row, (colour, text) in enumerate(legend):
        y = top + 8 + 15 * row
        draw.line([(left + 8, y + 6), (left + 26, y + 6)], fill=colour, width=2)
        draw.text((left + 32, y), text, fill="black", font=small)
    return _png_bytes(canvas)


def _ticks(low: float, high: float) -> list[float]:
    """About six round tick values between ``low`` and ``high``."""
    raw = (high - low) / 6
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(math.ceil(low / step), math.floor(high / step) + 1)]


def _dashed(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float],
            colour: tuple[int, int, int], dash: float) -> None:
    """A dashed line from ``start`` to ``end``."""
    (x0, y0), (x1, y1) = start, end
    length = math.hypot(x1 - x0, y1 - y0)
    for i in range(int(length // (2 * dash)) + 1):
        a, b = 2 * i * dash / length, min((2 * i + 1) * dash / length, 1.0)
        draw.line([(x0 + a * (x1 - x0), y0 + a * (y1 - y0)),
                   (x0 + b * (x1 - x0), y0 + b * (y1 - y0))], fill=colour, width=1)


def difference_maps(frames: Frames,
                    reconstruction: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Signed differences ``frame - reconstruction`` (channel mean) as RGB uint8 images on
    one shared diverging scale; and that scale (the largest absolute difference)."""
    diffs = np.mean(np.asarray(frames, np.float32) - reconstruction, axis=3)
    scale = max(float(np.max(np.abs(diffs))), 1e-6)
    index = np.clip(np.floor((0.5 + 0.5 * diffs / scale) * 256), 0, 255).astype(np.uint8)
    return list(_diff_colours()[index]), scale


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
