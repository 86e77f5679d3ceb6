"""Pixel and frame limits checked from an input's header, before any pixel is decoded."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from image_files import dicom_file, npy_file, pillow_file, with_png_size
from styleprobe.api import pb
from styleprobe.data import codecs
from styleprobe.data.codecs import ImageDecodeError, InputLimits, decode
from styleprobe.orchestrator.requests import RequestError, check_explain
from styleprobe.storage.local import LocalStore

LIMITS = InputLimits(max_pixels=1_000_000, max_frames=4)


def not_decoded(*args: object, **kwargs: object) -> None:
    raise AssertionError("an input over the limits was decoded")


@pytest.mark.parametrize(("declared", "words"), [
    ((12_500, 12_500), "12500x12500 = 156,250,000 pixels"),  # the 151 KB PNG
    ((20_000, 20_000), "over this server's limit of 50,000,000"),  # past Pillow's own guard
])
def test_a_huge_png_is_refused_from_its_header(tiny_repository: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               declared: tuple[int, int], words: str) -> None:
    request = pb.ExplainRequest(image_bytes=with_png_size(pillow_file(16, 16), *declared),
                                model_set="tiny")
    monkeypatch.setattr(Image.Image, "load", not_decoded)
    with pytest.raises(RequestError) as error:
        check_explain(request, tiny_repository, LocalStore(tmp_path), 400)
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    message = str(error.value)
    assert words in message and "STYLEPROBE_MAX_INPUT_PIXELS" in message, message
    assert "damaged" not in message


def test_the_limit_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLEPROBE_MAX_INPUT_PIXELS", "399")
    monkeypatch.setenv("STYLEPROBE_MAX_INPUT_FRAMES", "2")
    assert InputLimits.from_env() == InputLimits(399, 2)
    with pytest.raises(ImageDecodeError, match="20x20 = 400 pixels, over this server's limit"):
        decode(pillow_file(20, 20))


@pytest.mark.parametrize(("data", "words"), [
    (pillow_file(1001, 1000), "1001x1000 = 1,001,000 pixels"),
    (pillow_file(1001, 1000, "JPEG"), "1001x1000 = 1,001,000 pixels"),
    (pillow_file(16, 16, "TIFF", frames=5), "5 frames, over this server's limit of 4"),
    (dicom_file(1000, 1001, pixel_data=bytes(16)), "1001x1000 = 1,001,000 pixels"),
    (dicom_file(64, 64, frames=5), "5 frames, over this server's limit of 4"),
    (dicom_file(16, 16, frames=10**9, pixel_data=bytes(16)), "1,000,000,000 frames"),
    (npy_file(np.zeros((1000, 1001), np.uint8)), "1001x1000 = 1,001,000 pixels"),
])
def test_each_format_is_refused_over_the_limits(monkeypatch: pytest.MonkeyPatch,
                                                data: bytes, words: str) -> None:
    monkeypatch.setattr(Image.Image, "load", not_decoded)
    monkeypatch.setattr(codecs, "_dicom_frame", not_decoded)
    with pytest.raises(ImageDecodeError, match="over this server's limit") as error:
        decode(data, "scan", LIMITS)
    assert words in str(error.value)


@pytest.mark.parametrize("data", [
    pillow_file(1000, 1000), pillow_file(16, 16, "TIFF", frames=4),
    dicom_file(16, 16, frames=4), npy_file(np.zeros((1000, 1000), np.uint8)),
])
def test_inputs_at_the_limits_are_decoded(data: bytes) -> None:
    assert decode(data, "scan", LIMITS).pixels.ndim == 3
