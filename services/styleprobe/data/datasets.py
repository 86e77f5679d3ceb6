"""Image sets for training: rendered phantoms or a folder of the user's own images.

A folder holds image files (PNG, JPEG, TIFF, DICOM) and, optionally, ``factors.csv``
with a ``file`` column, a ``label`` column and any factor columns: the format that
``styleprobe data make`` writes and that a user's own images come in.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from styleprobe.data.histology import HistologyPhantoms
from styleprobe.data.knee import KneePhantoms
from styleprobe.data.phantom import PhantomSet, Shortcut

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".npy"}
PHANTOMS: dict[str, type[KneePhantoms] | type[HistologyPhantoms]] = {
    "knee": KneePhantoms, "histology": HistologyPhantoms}


class DataError(ValueError):
    """A data set cannot be read; the message says what to fix."""


@dataclass
class ImageSet:
    """Images (N, H, W, C) float32 in [0, 1], labels, factors and masks when known."""

    images: np.ndarray
    labels: np.ndarray | None = None
    factors: dict[str, np.ndarray] = field(default_factory=dict)
    masks: np.ndarray | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray | slice) -> ImageSet:
        return ImageSet(
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            factors={k: v[index] for k, v in self.factors.items()},
            masks=None if self.masks is None else self.masks[index],
            names=list(np.asarray(self.names, dtype=object)[index]) if self.names else [],
        )


def concatenate(sets: list[ImageSet]) -> ImageSet:
    """One image set of several, in order; masks and factors as the first set has them."""
    first = sets[0]
    return ImageSet(
        images=np.concatenate([s.images for s in sets]),
        labels=None if first.labels is None else np.concatenate([s.labels for s in sets]),
        factors={k: np.concatenate([s.factors[k] for s in sets]) for k in first.factors},
        masks=None if first.masks is None else np.concatenate([s.masks for s in sets]),
        names=[name for s in sets for name in s.names],
    )


def phantom_set(kind: str, seed: int = 0, size: int = 64,
                shortcut_rate: float | None = None) -> PhantomSet:
    """A phantom generator by name (``knee`` or ``histology``)."""
    if kind not in PHANTOMS:
        raise DataError(f"unknown phantom set {kind!r}; choose one of {sorted(PHANTOMS)}")
    cls = PHANTOMS[kind]
    if shortcut_rate is None:
        return cls(seed=seed, size=size)
    try:
        shortcut = Shortcut(rate=shortcut_rate)
    except ValueError as exc:
        raise DataError(str(exc)) from exc
    return cls(seed=seed, size=size, shortcut=shortcut)


def render(phantoms: PhantomSet, n: int, start: int = 0) -> ImageSet:
    """Render samples ``start .. start + n - 1`` into one ImageSet."""
    samples = [phantoms.sample(i) for i in range(start, start + n)]
    names = sorted(samples[0].factors) + sorted(samples[0].extra)
    return ImageSet(
        images=np.stack([s.image for s in samples]),
        labels=np.array([s.label for s in samples], dtype=np.int64),
        factors={k: np.array([{**s.factors, **s.extra}[k] for s in samples], np.float32)
                 for k in names},
        masks=np.stack([s.mask for s in samples]),
        names=[f"{phantoms.name}_{i:06d}.png" for i in range(start, start + n)],
    )


def load_folder(folder: Path, size: int, channels: int) -> ImageSet:
    """Read a folder of images (and its optional ``factors.csv``) at one size."""
    from styleprobe.data.codecs import ImageDecodeError, load_image, to_model_input

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    images, shapes = [], set()
    for path in files:
        try:
            raw = load_image(path)
        except ImageDecodeError as exc:
            raise DataError(f"cannot read {path.name}: {exc}") from exc
        shapes.add(raw.shape[:2])
        try:
            images.append(to_model_input(raw, size, channels))
        except ImageDecodeError as exc:
            raise DataError(f"{path.name}: {exc}") from exc
    if len(shapes) > 1:
        raise DataError(f"images in {folder} have mixed sizes {sorted(shapes)}; "
                        "resize them to one size first")
    table = _read_table(folder / "factors.csv", [p.name for p in files])
    labels = table.pop("label", None)
    return ImageSet(
        images=np.stack(images).astype(np.float32),
        labels=None if labels is None else labels.astype(np.int64),
        factors=table,
        names=[p.name for p in files],
    )


def _read_table(path: Path, names: list[str]) -> dict[str, np.ndarray]:
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        rows = {row["file"]: row for row in csv.DictReader(fh)}
    missing = [n for n in names if n not in rows]
    if missing:
        raise DataError(f"{path} has no row for {missing[0]} (and {len(missing) - 1} more)")
    columns = [c for c in next(iter(rows.values())) if c != "file"]
    return {c: np.array([float(rows[n][c]) for n in names], np.float32) for c in columns}


def write_folder(data: ImageSet, out: Path) -> None:
    """Write PNG files, ``factors.csv`` and ``masks/`` (the format :func:`load_folder` reads)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    columns = sorted(data.factors)
    with (out / "factors.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", *columns])
        for i, name in enumerate(data.names):
            pixels = np.round(data.images[i] * 255).astype(np.uint8)
            mode = "L" if pixels.shape[2] == 1 else "RGB"
            Image.fromarray(pixels.squeeze(2) if mode == "L" else pixels, mode).save(out / name)
            if data.masks is not None:
                (out / "masks").mkdir(exist_ok=True)
                Image.fromarray(data.masks[i] * 255).save(out / "masks" / name)
            label = "" if data.labels is None else int(data.labels[i])
            writer.writerow([name, label, *(f"{data.factors[c][i]:.6g}" for c in columns)])
