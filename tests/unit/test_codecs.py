"""Input codecs: PNG/JPEG/TIFF, DICOM (pydicom's own test files) and .npy."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.uid import JPEGLSLossless

from styleprobe.data.codecs import (
    ImageDecodeError,
    decode,
    describe_input,
    input_sha256,
    load_image,
    to_model_input,
)

RNG = np.random.default_rng(0)
GREY8 = RNG.integers(0, 256, (20, 24), dtype=np.uint8)
GREY16 = RNG.integers(0, 2**16, (20, 24), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (20, 24, 3), dtype=np.uint8)


def encoded(pixels: np.ndarray, fmt: str, mode: str | None = None, **options: object) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def dicom(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 linear window to [0, 1]."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


# --- PNG / JPEG / TIFF ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_8_bit_grey_and_rgb_round_trip(fmt: str) -> None:
    grey = load_image(encoded(GREY8, fmt))
    rgb = load_image(encoded(RGB8, fmt))
    assert grey.dtype == np.float32 and grey.shape == (20, 24, 1)
    np.testing.assert_allclose(grey[..., 0], GREY8 / 255, atol=1e-6)
    np.testing.assert_allclose(rgb, RGB8 / 255, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_scaled_by_16_bits(fmt: str) -> None:
    decoded = decode(encoded(GREY16, fmt))
    assert decoded.bit_depth == 16
    np.testing.assert_allclose(decoded.pixels[..., 0], GREY16 / 65535, atol=1e-6)


def test_32_bit_integer_tiff_with_16_bit_values_uses_the_16_bit_range() -> None:
    pixels = load_image(encoded(GREY16.astype(np.int32), "TIFF"))
    np.testing.assert_allclose(pixels[..., 0], GREY16 / 65535, atol=1e-6)


def test_jpeg_is_close_to_its_source() -> None:
    smooth = np.repeat(np.linspace(0, 255, 24, dtype=np.uint8)[None, :], 20, axis=0)
    pixels = load_image(encoded(smooth, "JPEG", quality=95), filename="x.jpg")
    assert pixels.shape == (20, 24, 1)
    assert np.abs(pixels[..., 0] - smooth / 255).mean() < 0.02


def test_rgba_and_la_drop_alpha() -> None:
    rgba = np.dstack([RGB8, np.full((20, 24), 7, np.uint8)])
    decoded = decode(encoded(rgba, "PNG"))
    assert decoded.describe()["alpha"] == "dropped"
    np.testing.assert_allclose(decoded.pixels, RGB8 / 255, atol=1e-6)
    la = load_image(encoded(np.dstack([GREY8, GREY8]), "PNG"))
    np.testing.assert_allclose(la[..., 0], GREY8 / 255, atol=1e-6)


def test_palette_and_cmyk_become_rgb() -> None:
    palette = Image.fromarray(RGB8).quantize(16)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    np.testing.assert_allclose(load_image(buffer.getvalue()),
                               np.asarray(palette.convert("RGB")) / 255, atol=1e-6)
    cmyk = load_image(encoded(RGB8, "TIFF", mode="CMYK"))
    assert cmyk.shape == (20, 24, 3)
    assert np.abs(cmyk - RGB8 / 255).max() < 0.02


def test_path_and_bytes_give_the_same_image(tmp_path: Path) -> None:
    path = tmp_path / "image.png"
    path.write_bytes(encoded(RGB8, "PNG"))
    np.testing.assert_array_equal(load_image(path), load_image(str(path)))
    np.testing.assert_array_equal(load_image(path), load_image(path.read_bytes()))
    assert input_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert decode(path).sha256 == input_sha256(path)


def test_format_comes_from_content_not_the_name() -> None:
    assert describe_input(encoded(GREY8, "PNG"), filename="scan.dcm")["format"] == "PNG"


# --- DICOM ------------------------------------------------------------------------------------

def test_mr_window_from_the_file() -> None:
    ds = dicom("MR_small.dcm")
    pixels = load_image(get_testdata_file("MR_small.dcm"))
    assert pixels.shape == (64, 64, 1)
    expected = window(ds.pixel_array.astype(float), ds.WindowCenter, ds.WindowWidth)
    np.testing.assert_allclose(pixels[..., 0], expected, atol=1e-5)


def test_big_endian_and_jpeg2000_equal_the_little_endian_file() -> None:
    reference = load_image(get_testdata_file("MR_small.dcm"))
    for name in ("MR_small_bigendian.dcm", "MR_small_jp2klossless.dcm"):
        np.testing.assert_allclose(load_image(get_testdata_file(name)), reference, atol=1e-6)


def test_ct_rescale_is_applied_before_the_window() -> None:
    ds = dicom("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400  # a soft-tissue window, in Hounsfield units
    hounsfield = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    pixels = load_image(dicom_bytes(ds))
    np.testing.assert_allclose(pixels[..., 0], window(hounsfield, 40, 400), atol=1e-5)


def test_ct_without_a_window_is_stretched_min_max() -> None:
    info = describe_input(get_testdata_file("CT_small.dcm"))
    pixels = load_image(get_testdata_file("CT_small.dcm"))
    assert info["window"] == "min-max" and info["Modality"] == "CT"
    assert pixels.min() == 0.0 and pixels.max() == 1.0


def test_monochrome1_is_inverted() -> None:
    ds = dicom("MR_small.dcm")
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = load_image(dicom_bytes(ds))
    np.testing.assert_allclose(inverted, 1 - load_image(get_testdata_file("MR_small.dcm")),
                               atol=1e-6)


def test_rgb_jpeg_baseline_and_ybr_match_the_uncompressed_rgb() -> None:
    reference = load_image(get_testdata_file("SC_rgb_dcmtk_+eb+cr.dcm"))
    assert reference.shape == (100, 100, 3)
    for name in ("SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm"):
        assert np.abs(load_image(get_testdata_file(name)) - reference).mean() < 0.01


def test_rgb_values_are_scaled_by_bits_stored() -> None:
    ds = dicom("SC_rgb_small_odd.dcm")
    pixels = load_image(get_testdata_file("SC_rgb_small_odd.dcm"))
    np.testing.assert_allclose(pixels, ds.pixel_array / 255, atol=1e-6)


def test_multi_frame_takes_the_middle_frame_and_says_so() -> None:
    path = get_testdata_file("SC_rgb_rle_2frame.dcm")
    decoded = decode(path)
    assert decoded.describe()["frames"] == 2 and decoded.describe()["frame"] == 1
    np.testing.assert_allclose(decoded.pixels, dicom("SC_rgb_rle_2frame.dcm").pixel_array[1] / 255,
                               atol=1e-6)


def test_dicom_without_preamble_is_read_by_content() -> None:
    ds = dicom("MR_small.dcm")
    del ds.file_meta
    ds.preamble = None
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert buffer.getvalue()[128:132] != b"DICM"
    np.testing.assert_allclose(load_image(buffer.getvalue()),
                               load_image(get_testdata_file("MR_small.dcm")), atol=1e-6)


def test_describe_input_keeps_no_patient_identifiers() -> None:
    for name in ("CT_small.dcm", "MR_small.dcm"):
        ds = dicom(name)
        info = describe_input(get_testdata_file(name))
        text = repr(info)
        assert set(info) <= {"format", "width", "height", "channels", "bit_depth", "window",
                             "Modality", "PhotometricInterpretation", "TransferSyntaxUID",
                             "BodyPartExamined", "frames", "frame", "StudyInstanceUID",
                             "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                             "WindowCenter", "WindowWidth"}
        for identifier in (ds.PatientName, ds.PatientID):
            assert str(identifier) and str(identifier) not in text
        assert info["TransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID


def test_dicom_without_pixel_data_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="without pixel data"):
        load_image(get_testdata_file("rtplan.dcm"))


def test_truncated_dicom_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="cannot decode the pixel data"):
        load_image(get_testdata_file("MR_truncated.dcm"))


@pytest.mark.skipif(get_decoder(JPEGLSLossless).is_available,
                    reason="a JPEG-LS plugin is installed here")
def test_undecodable_transfer_syntax_names_it_and_the_missing_plugin() -> None:
    with pytest.raises(ImageDecodeError, match=r"JPEG-LS.*1\.2\.840\.10008\.1\.2\.4\.80.*requires"):
        load_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))


# --- .npy -------------------------------------------------------------------------------------

def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_npy_numbers_are_scaled_by_type() -> None:
    unit = RNG.random((10, 12)).astype(np.float32)
    np.testing.assert_allclose(load_image(npy(unit))[..., 0], unit)
    wide = np.linspace(-5, 15, 120).reshape(10, 12)
    np.testing.assert_allclose(load_image(npy(wide))[..., 0], (wide + 5) / 20, atol=1e-6)
    np.testing.assert_allclose(load_image(npy(GREY16))[..., 0], GREY16 / 65535, atol=1e-6)
    signed = np.array([[-32768, 0, 32767]], np.int16)
    np.testing.assert_allclose(load_image(npy(signed))[..., 0], [[0, 32768 / 65535, 1]],
                               atol=1e-6)
    rgba = RNG.random((10, 12, 4))
    np.testing.assert_allclose(load_image(npy(rgba)), rgba[..., :3], atol=1e-6)


@pytest.mark.parametrize("array, message", [
    (np.array([[0.1, np.nan], [0.2, 0.3]]), "NaN"),
    (np.array([[0.1, np.inf], [0.2, 0.3]]), "NaN or infinite"),
    (np.zeros((3, 10, 12)), "channel-first"),
    (np.zeros((2, 2, 2, 2)), "expected"),
    (np.array([["a", "b"]]), "real numbers"),
])
def test_npy_bad_arrays_are_refused(array: np.ndarray, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        load_image(npy(array))


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (encoded(RGB8, "PNG")[:200], "truncated"),
    (np.random.default_rng(1).bytes(4000), "not a supported image"),
    (b"hello, world", "not a supported image"),
])
def test_bad_bytes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        load_image(data)


def damaged(name: str) -> bytes:
    """pydicom's file with a few header bytes overwritten."""
    data = bytearray(Path(get_testdata_file(name)).read_bytes())
    data[140:150] = b"\xff" * 10
    return bytes(data)


@pytest.mark.parametrize("data", [
    Path(get_testdata_file("CT_small.dcm")).read_bytes()[:1000],
    Path(get_testdata_file("SC_rgb_jpeg_dcmtk.dcm")).read_bytes()[:-2000],
    damaged("MR_small.dcm"),
    encoded(RGB8, "JPEG")[:-300],
    encoded(RGB8, "TIFF")[:-300],
    npy(np.zeros((4, 4)))[:30],
], ids=["dicom-header-cut", "dicom-jpeg-cut", "dicom-header-damaged", "jpeg-cut", "tiff-cut",
        "npy-header-cut"])
def test_damaged_files_are_refused(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        load_image(data)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="does not exist"):
        load_image(tmp_path / "nope.png")


# --- to_model_input ---------------------------------------------------------------------------

def test_centre_crop_and_resize() -> None:
    image = np.zeros((40, 60, 1), np.float32)
    image[:, 10:50] = 1.0  # the centre square is all ones, the side bands zeros
    fitted = to_model_input(image, 16, 1)
    assert fitted.shape == (16, 16, 1) and fitted.dtype == np.float32
    np.testing.assert_allclose(fitted, 1.0, atol=1e-6)


def test_same_size_is_unchanged_and_rgb_becomes_luminance() -> None:
    rgb = RNG.random((16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(to_model_input(rgb, 16, 3), rgb)
    grey = to_model_input(rgb, 16, 1)[..., 0]
    np.testing.assert_allclose(grey, rgb @ [0.299, 0.587, 0.114], atol=1e-6)


def test_downsampling_stays_in_range() -> None:
    noise = RNG.random((64, 64, 3)).astype(np.float32)
    fitted = to_model_input(noise, 8, 3)
    assert fitted.min() >= 0 and fitted.max() <= 1
    assert abs(float(fitted.mean()) - float(noise.mean())) < 0.02


def test_grey_image_for_an_rgb_model_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match=r"1 channel.*expects 3 \(RGB\)"):
        to_model_input(np.zeros((16, 16, 1), np.float32), 16, 3)


def test_tiny_image_is_refused() -> None:
    with pytest.raises(ImageDecodeError, match="at least 8x8"):
        to_model_input(np.zeros((7, 30, 1), np.float32), 16, 1)


def test_dicom_fits_a_model() -> None:
    fitted = to_model_input(load_image(get_testdata_file("CT_small.dcm")), 32, 1)
    assert fitted.shape == (32, 32, 1)
