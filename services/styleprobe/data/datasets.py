"""Image sets for training: rendered phantoms or a folder of the user's own images.

A folder holds image files (PNG, JPEG, TIFF, DICOM) and, optionally, ``factors.csv``
with a ``file`` column, a ``label`` column and any factor columns: the format that
``styleprobe data make`` writes and that a user's own images come in.
"""

from __future__ import annotations

import csv
import hashlib
import math
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


MAX_PROBLEMS = 20  # lines of one DataError that lists what is wrong with a factors.csv


@dataclass
class CheckedFolder:
    """A folder whose ``factors.csv`` has been checked completely: its image files, and
    the labels and numeric factor columns in the files' order (none without the CSV)."""

    folder: Path
    files: list[Path]
    labels: np.ndarray | None = None
    factors: dict[str, np.ndarray] = field(default_factory=dict)

    def fingerprint(self) -> dict[str, str | int | None]:
        """The folder, its number of images, a hash of their names and sizes, and a hash
        of ``factors.csv`` (None without one)."""
        listing = "".join(f"{p.name}\t{p.stat().st_size}\n" for p in self.files)
        table = self.folder / "factors.csv"
        return {"folder": str(self.folder), "images": len(self.files),
                "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
                "factors_sha256": hashlib.sha256(table.read_bytes()).hexdigest()
                if table.is_file() else None}

    def load(self, size: int, channels: int) -> ImageSet:
        """Decode the images at one size (DataError for an unreadable image or mixed sizes)."""
        from styleprobe.data.codecs import ImageDecodeError, load_image, to_model_input

        images, shapes = [], set()
        for path in self.files:
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
            raise DataError(f"images in {self.folder} have mixed sizes {sorted(shapes)}; "
                            "resize them to one size first")
        return ImageSet(images=np.stack(images).astype(np.float32), labels=self.labels,
                        factors=dict(self.factors), names=[p.name for p in self.files])


def check_folder(folder: Path, classes: int | None = None) -> CheckedFolder:
    """List a folder's images and check its optional ``factors.csv``, before any image is
    decoded.

    The CSV needs a ``file`` and a ``label`` column; every other column is a numeric
    factor. Every image needs exactly one row and every row an image in the folder; every
    label is a class index (``0 .. classes - 1`` when ``classes`` is given, else any
    non-negative integer) and every factor value a finite number. All problems are
    reported at once in one DataError, one line each, naming the CSV's row and file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    csv_path = folder / "factors.csv"
    if not csv_path.exists():
        return CheckedFolder(folder, files)
    labels, factors = _read_table(csv_path, [p.name for p in files], classes)
    return CheckedFolder(folder, files, labels, factors)


def load_folder(folder: Path, size: int, channels: int,
                classes: int | None = None) -> ImageSet:
    """Read a folder of images (and its optional ``factors.csv``) at one size: all of
    :func:`check_folder`'s checks first, then the images."""
    return check_folder(folder, classes).load(size, channels)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a CSV (a UTF-8 byte-order mark is allowed)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = [[cell.strip() for cell in row] for row in csv.reader(fh)]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise DataError(f"{path} cannot be read as CSV text: {exc}") from exc
    table = [row for row in table if any(row)]  # blank lines
    if not table:
        raise DataError(f"{path} is empty; it needs a header with 'file' and 'label' columns")
    return table[0], table[1:]


def _header_problems(path: Path, header: list[str]) -> list[str]:
    problems = [f"{path}: column {i + 1} has no name" for i, c in enumerate(header) if not c]
    problems += [f"{path}: column {c!r} appears more than once"
                 for c in sorted({c for c in header if c and header.count(c) > 1})]
    problems += [f"{path}: no {c!r} column (the header is {','.join(header)!r})"
                 for c in ("file", "label") if c not in header]
    return problems


def _label(text: str, classes: int | None) -> int:
    """A class index written as an integer (``1`` or ``1.0``); ValueError says why not."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value < 0 or (classes is not None and value >= classes):
        known = "a non-negative integer" if classes is None else f"0..{classes - 1}"
        raise ValueError(f"label {text!r} is not a class index ({known})")
    return int(value)


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"column {column!r} has {text!r}, not a number (columns other "
                         "than 'file' and 'label' must be numeric)")
    return value


def _read_table(path: Path, names: list[str], classes: int | None
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and factor columns of ``factors.csv`` in the order of ``names``."""
    header, rows = _read_rows(path)
    problems = _header_problems(path, header)
    if problems:
        raise DataError("\n".join(problems))
    columns = [c for c in header if c not in ("file", "label")]
    parsed: dict[str, tuple[int, list[float]]] = {}
    listed: set[str] = set()
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        cells = dict(zip(header, row, strict=False))
        name = cells.get("file", "")
        where = f"{path} row {number} ({name or 'no file'})"
        if name in listed:
            problems.append(f"{where}: {name!r} has another row above")
            continue
        listed.add(name)
        if len(row) != len(header):
            problems.append(f"{where}: {len(row)} fields, the header has {len(header)}")
            continue
        if name not in names:
            problems.append(f"{where}: no image {name!r} in {path.parent}")
        try:
            label = _label(cells["label"], classes)
            values = [_number(cells[c], c) for c in columns]
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        parsed[name] = label, values
    problems += [f"{path}: no row for image {n!r}" for n in names if n not in listed]
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = [p.replace("\n", "\\n") for p in problems[:MAX_PROBLEMS]]  # quoted cells
        raise DataError("\n".join(shown + ([f"... and {more} more problems"] if more > 0 else [])))
    labels = np.array([parsed[n][0] for n in names], np.int64)
    factors = {c: np.array([parsed[n][1][i] for n in names], np.float32)
               for i, c in enumerate(columns)}
    return labels, factors


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
