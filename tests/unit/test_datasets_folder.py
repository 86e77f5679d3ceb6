"""load_folder: a folder of the user's own images, and clear errors for bad ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from styleprobe.data.datasets import DataError, load_folder

RNG = np.random.default_rng(0)


def write_png(path: Path, shape: tuple[int, ...]) -> None:
    Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(path)


def test_reads_images_and_labels(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (20, 20))
    write_png(tmp_path / "b.png", (20, 20, 3))
    (tmp_path / "factors.csv").write_text("file,label,width\na.png,1,0.5\nb.png,0,0.25\n")
    data = load_folder(tmp_path, size=16, channels=1)
    assert data.images.shape == (2, 16, 16, 1)
    assert data.labels.tolist() == [1, 0] and data.names == ["a.png", "b.png"]
    np.testing.assert_allclose(data.factors["width"], [0.5, 0.25])


def test_reads_dicom(tmp_path: Path) -> None:
    shutil.copy(get_testdata_file("MR_small.dcm"), tmp_path / "mr.dcm")
    assert load_folder(tmp_path, size=32, channels=1).images.shape == (1, 32, 32, 1)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_folder(tmp_path / "nowhere", size=16, channels=1)


def test_unreadable_image(tmp_path: Path) -> None:
    write_png(tmp_path / "good.png", (20, 20))
    (tmp_path / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(DataError, match=r"cannot read broken\.png"):
        load_folder(tmp_path, size=16, channels=1)


def test_mixed_sizes(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (20, 20))
    write_png(tmp_path / "b.png", (24, 20))
    with pytest.raises(DataError, match="mixed sizes"):
        load_folder(tmp_path, size=16, channels=1)


def test_wrong_channel_count(tmp_path: Path) -> None:
    write_png(tmp_path / "grey.png", (20, 20))
    with pytest.raises(DataError, match=r"grey\.png: image has 1 channel"):
        load_folder(tmp_path, size=16, channels=3)
