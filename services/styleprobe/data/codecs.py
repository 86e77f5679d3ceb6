"""Image input codecs: PNG, JPEG, TIFF, DICOM and ``.npy`` to float32 arrays in [0, 1].

:func:`decode` reads an input once and returns a :class:`DecodedImage`: the pixels as
(H, W, C) float32 in [0, 1] with C in {1, 3}, plus metadata that is safe to store (format,
size, bit depth and, for DICOM, only the modality, photometric interpretation, transfer
syntax, body part, the instance's UIDs, the frame used and the window applied: never a
patient identifier; :func:`dicom_reference` picks the DICOM reference out of them).
:func:`load_image` and :func:`describe_input` are thin wrappers; :func:`to_model_input`
fits an image to a model set's resolution and channels.

The format is detected from the content; the file name is only used in messages. An
input larger than the :class:`InputLimits` (pixels of a frame, frames of a file) is refused
from its header, before any pixel is decoded.
"""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # pydicom is imported when a DICOM file comes: it takes most of a second
    from pydicom import Dataset
    from pydicom.uid import UID

logger = logging.getLogger(__name__)

Source = Path | str | bytes

MIN_SIDE = 8
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF")
NPY_MAGIC = b"\x93NUMPY"
DICOM_SAFE_TAGS = ("Modality", "PhotometricInterpretation", "BodyPartExamined")
DICOM_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
LUMINANCE = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow "L"


class ImageDecodeError(ValueError):
    """An input image cannot be read or used; the message says what is wrong."""


@dataclass(frozen=True)
class InputLimits:
    """The largest input decoded: pixels of one frame and frames of one file."""

    max_pixels: int
    max_frames: int

    @classmethod
    def from_env(cls) -> InputLimits:
        """The limits set by ``STYLEPROBE_MAX_INPUT_PIXELS`` and ``_FRAMES`` (or their
        defaults, :class:`~styleprobe.config.Settings`)."""
        from styleprobe.config import Settings  # it imports the job spec: only when needed

        settings = Settings.from_env()
        return cls(settings.max_input_pixels, settings.max_input_frames)

    def check(self, name: str, width: int, height: int, frames: int = 1) -> None:
        """Refuse a ``width`` x ``height`` input of ``frames`` frames over the limits."""
        if width * height > self.max_pixels:
            raise ImageDecodeError(
                f"{name} is {width}x{height} = {width * height:,} pixels, over this server's "
                f"limit of {self.max_pixels:,} (STYLEPROBE_MAX_INPUT_PIXELS); it was not "
                "decoded")
        if frames > self.max_frames:
            raise ImageDecodeError(
                f"{name} has {frames:,} frames, over this server's limit of "
                f"{self.max_frames:,} (STYLEPROBE_MAX_INPUT_FRAMES); it was not decoded")


@dataclass
class DecodedImage:
    """Pixels (H, W, C) float32 in [0, 1], C in {1, 3}, with safe metadata."""

    pixels: np.ndarray
    format: str
    bit_depth: int
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """Metadata safe to store and show: no patient identifiers."""
        height, width, channels = self.pixels.shape
        return {"format": self.format, "width": width, "height": height,
                "channels": channels, "bit_depth": self.bit_depth, **self.details}


def read_bytes(source: Source) -> bytes:
    """The raw bytes of ``source`` (a path or the bytes themselves)."""
    if isinstance(source, bytes):
        return source
    path = Path(source)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageDecodeError(f"{path} does not exist") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from None


def input_sha256(source: Source) -> str:
    """Hex SHA-256 of the raw input bytes."""
    return hashlib.sha256(read_bytes(source)).hexdigest()


def decode(source: Source, filename: str | None = None,
           limits: InputLimits | None = None) -> DecodedImage:
    """Read an image from a path or bytes, detecting its format from the content; one over
    ``limits`` (default: the configured ones) is refused from its header."""
    limits = limits or InputLimits.from_env()
    data = read_bytes(source)
    if filename is None and not isinstance(source, bytes):
        filename = Path(source).name
    name = filename or "input"
    if not data:
        raise ImageDecodeError(f"{name} is empty (0 bytes)")
    try:
        fmt, pixels, bits, details = _decode_content(data, name, limits)
    except ImageDecodeError:
        raise
    except Exception as exc:  # a damaged file makes the decoders raise almost anything
        raise ImageDecodeError(f"{name} is damaged or truncated: {_reason(exc)}") from exc
    return DecodedImage(pixels=np.clip(pixels, 0.0, 1.0).astype(np.float32), format=fmt,
                        bit_depth=bits, sha256=hashlib.sha256(data).hexdigest(),
                        details=details)


def _decode_content(data: bytes, name: str,
                    limits: InputLimits) -> tuple[str, np.ndarray, int, dict[str, Any]]:
    if data.startswith(NPY_MAGIC):
        return "NPY", *_decode_npy(data, name, limits)
    if data[128:132] == b"DICM":
        return "DICOM", *_decode_dicom(data, name, limits, force=False)
    try:
        image = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        return "DICOM", *_decode_dicom(data, name, limits, force=True)
    except Image.DecompressionBombError as exc:  # Pillow's own limit, far above ours
        raise ImageDecodeError(f"{name} is over this server's limit of {limits.max_pixels:,} "
                               f"pixels (STYLEPROBE_MAX_INPUT_PIXELS): {exc}") from None
    limits.check(name, *image.size, getattr(image, "n_frames", 1))
    return str(image.format), *_decode_pillow(image)


def _reason(exc: Exception) -> str:
    """An exception's message on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [repr(exc)]
    return " ".join([lines[0], "; ".join(lines[1:])]).strip()


def load_image(source: Source, filename: str | None = None) -> np.ndarray:
    """Pixels of an image file or bytes as (H, W, C) float32 in [0, 1], C in {1, 3}."""
    return decode(source, filename).pixels


def describe_input(source: Source, filename: str | None = None) -> dict[str, Any]:
    """Safe metadata of an input (format, size, channels, bit depth, DICOM modality...)."""
    return decode(source, filename).describe()


def to_model_input(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize to ``size`` and match ``channels``: float32 in [0, 1]."""
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageDecodeError(f"expected an (H, W, 1) or (H, W, 3) image, got {image.shape}")
    height, width, have = image.shape
    if min(height, width) < MIN_SIDE:
        raise ImageDecodeError(f"image is {width}x{height} pixels; "
                               f"at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if channels not in (1, 3):
        raise ImageDecodeError(f"model expects {channels} channels; only 1 and 3 are supported")
    if have == 1 and channels == 3:
        raise ImageDecodeError("image has 1 channel (grayscale); this model set expects 3 (RGB)")
    if have == 3 and channels == 1:
        image = (image @ LUMINANCE)[..., None]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = np.asarray(image[top:top + side, left:left + side], dtype=np.float32)
    if side != size:
        square = np.stack([_resize(square[..., c], size) for c in range(channels)], axis=-1)
    return np.clip(square, 0.0, 1.0).astype(np.float32)


def fit_note(height: int, width: int, size: int) -> str | None:
    """What :func:`to_model_input` does to the size of a ``width`` x ``height`` image for a
    ``size`` x ``size`` model (None: nothing)."""
    if (height, width) == (size, size):
        return None
    side = min(height, width)
    steps = [f"centre-cropped to {side}x{side}"] if height != width else []
    if side != size:
        steps.append(f"resized to {size}x{size}")
    return f"{width}x{height} image {' and '.join(steps)} (the model set's input size)"


def _resize(plane: np.ndarray, size: int) -> np.ndarray:
    resized = Image.fromarray(plane).resize((size, size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.float32)


def scale_to_unit(values: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Scale numbers to [0, 1]: integers by ``bits`` (else their dtype's range), floats
    min-max unless already in [0, 1]; NaN or infinity is an error."""
    if values.dtype == np.bool_:
        return values.astype(np.float32)
    if np.issubdtype(values.dtype, np.integer):
        info = np.iinfo(values.dtype)
        low, high = (0, 2**bits - 1) if bits else (info.min, info.max)
        return ((values.astype(np.float64) - low) / (high - low)).astype(np.float32)
    if not np.isfinite(values).all():
        raise ImageDecodeError("the image contains NaN or infinite values")
    if values.min() >= 0.0 and values.max() <= 1.0:
        return values.astype(np.float32)
    return min_max(values)


def min_max(values: np.ndarray) -> np.ndarray:
    """Stretch ``values`` to [0, 1] (zeros when constant)."""
    values = values.astype(np.float64)
    low, span = float(values.min()), float(np.ptp(values))
    if span == 0.0:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) / span).astype(np.float32)


def _as_channels(pixels: np.ndarray, name: str) -> np.ndarray:
    """(H, W) or (H, W, C) with C in 1/3/4 to (H, W, 1|3); a fourth (alpha) channel is dropped."""
    if pixels.ndim == 2:
        return pixels[..., None]
    if pixels.ndim == 3 and pixels.shape[2] in (1, 3, 4):
        return pixels[..., :3]
    hint = ""
    if pixels.ndim == 3 and pixels.shape[0] in (1, 3, 4):
        hint = " (it looks channel-first: transpose it to (H, W, C))"
    raise ImageDecodeError(f"{name} has shape {pixels.shape}; expected (H, W) or (H, W, C) "
                           f"with C in 1, 3 or 4{hint}")


# --- .npy -------------------------------------------------------------------------------------

def decode_array(array: np.ndarray, name: str = "array",
                 limits: InputLimits | None = None) -> DecodedImage:
    """An image given as an array, checked and scaled as the content of a ``.npy`` file;
    its hash covers the dtype, the shape and the values."""
    array = np.asarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode()
                            + np.ascontiguousarray(array).tobytes()).hexdigest()
    try:
        pixels, bits, details = _npy_pixels(array, name, limits or InputLimits.from_env())
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"{name} cannot be used: {_reason(exc)}") from exc
    return DecodedImage(pixels=np.clip(pixels, 0.0, 1.0).astype(np.float32), format="NPY",
                        bit_depth=bits, sha256=digest, details=details)


def _decode_npy(data: bytes, name: str,
                limits: InputLimits) -> tuple[np.ndarray, int, dict[str, Any]]:
    return _npy_pixels(np.load(io.BytesIO(data), allow_pickle=False), name, limits)


def _npy_pixels(array: np.ndarray, name: str,
                limits: InputLimits) -> tuple[np.ndarray, int, dict[str, Any]]:
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) \
            or np.iscomplexobj(array):
        raise ImageDecodeError(f"{name} holds {array.dtype} values; expected real numbers")
    array = _as_channels(array, name)
    limits.check(name, array.shape[1], array.shape[0])
    return scale_to_unit(array), array.dtype.itemsize * 8, {"dtype": str(array.dtype)}


# --- PNG / JPEG / TIFF ------------------------------------------------------------------------

def _decode_pillow(image: Image.Image) -> tuple[np.ndarray, int, dict[str, Any]]:
    image.load()
    details: dict[str, Any] = {"mode": image.mode}
    if image.mode in ("LA", "RGBA", "PA") or "transparency" in image.info:
        details["alpha"] = "dropped"
    if image.mode == "I" or image.mode.startswith("I;16"):
        array = np.asarray(image).astype(np.int64)
        bits = _tiff_bits(image) or (16 if array.min() >= 0 and array.max() < 2**16 else 0)
        pixels = scale_to_unit(array, bits) if bits else min_max(array)
        return pixels[..., None], bits or 32, details
    if image.mode == "F":
        return scale_to_unit(np.asarray(image))[..., None], 32, details
    if image.mode in ("1", "L", "LA"):
        bits = 1 if image.mode == "1" else 8
        return np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0, bits, details
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, 8, details


def _tiff_bits(image: Image.Image) -> int | None:
    """Bits per sample a TIFF declares (e.g. 12), when below its container's size."""
    tags = getattr(image, "tag_v2", None)
    if tags is None or 258 not in tags:
        return None
    value = tags[258]
    bits = int(value[0] if isinstance(value, tuple) else value)
    return bits if 0 < bits < 32 else None


# --- DICOM ------------------------------------------------------------------------------------

def _decode_dicom(data: bytes, name: str, limits: InputLimits,
                  force: bool) -> tuple[np.ndarray, int, dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            if force:  # a forced read of a file that is no DICOM warns on the way
                warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), force=force)
        if force and "PixelData" not in ds and "Rows" not in ds:
            raise InvalidDicomError("no image elements")
    except Exception:
        if force:  # the last guess: the content is no format we know
            raise ImageDecodeError(_unknown_format(name)) from None
        raise
    syntax = _transfer_syntax(ds)
    details: dict[str, Any] = {k: str(ds.get(k, ""))
                               for k in (*DICOM_SAFE_TAGS, *DICOM_UIDS) if k in ds}
    if syntax is not None:
        details["TransferSyntaxUID"] = str(syntax)
    if "PixelData" not in ds:
        raise ImageDecodeError(f"{name} is a DICOM file without pixel data "
                               f"(modality {ds.get('Modality', 'unknown')}): not an image")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    limits.check(name, int(ds.get("Columns", 0) or 0), int(ds.get("Rows", 0) or 0), frames)
    frame = frames // 2
    if frames > 1:
        details.update(frames=frames, frame=frame)
        logger.info("multi-frame DICOM input: %d frames; using the middle one (%d)",
                    frames, frame)
    raw = _dicom_frame(ds, frame, syntax, name)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)))
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return scale_to_unit(np.asarray(apply_color_lut(raw, ds))), bits, details
    if raw.ndim == 3:  # colour: pydicom has already converted YBR to RGB
        return scale_to_unit(raw, bits if raw.dtype.kind in "iu" else None), bits, details
    return _dicom_grey(raw, ds, photometric, details)[..., None], bits, details


def _transfer_syntax(ds: Dataset) -> UID | None:
    """The file's transfer syntax; for a file without one (no preamble or meta header),
    the uncompressed syntax pydicom detected while reading, recorded so it can decode."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") is not None:
        return meta.TransferSyntaxUID
    implicit, little = ds.original_encoding
    if implicit is None:
        return None
    syntax = ImplicitVRLittleEndian if implicit else (
        ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    ds.file_meta = meta if meta is not None else FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return syntax


def _unknown_format(name: str) -> str:
    return (f"{name} is not a supported image: expected PNG, JPEG, TIFF, DICOM or .npy "
            "(format detected from the content)")


def _dicom_frame(ds: Dataset, frame: int, syntax: UID | None, name: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        return np.asarray(pixel_array(ds, index=frame))
    except Exception as exc:  # pydicom raises many types for unsupported or damaged data
        what = ("an unknown transfer syntax" if syntax is None
                else f"{syntax.name} ({syntax})" if syntax.name != syntax
                else f"the unknown transfer syntax {syntax}")
        raise ImageDecodeError(f"cannot decode the pixel data of {name}, encoded as {what}: "
                               f"{_reason(exc)}") from exc


def _dicom_grey(raw: np.ndarray, ds: Dataset, photometric: str,
                details: dict[str, Any]) -> np.ndarray:
    """Modality LUT (rescale), then the file's VOI window or LUT, else min-max; MONOCHROME1
    is inverted so that high values are bright."""
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(raw, ds)
    windowed = _apply_voi(values, ds)
    details["window"] = "min-max" if windowed is None else "file"
    if windowed is not None and "VOILUTSequence" not in ds:
        details.update(WindowCenter=_first(ds.WindowCenter), WindowWidth=_first(ds.WindowWidth))
    unit = min_max(values) if windowed is None else windowed
    return 1.0 - unit if photometric == "MONOCHROME1" else unit


def _apply_voi(values: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """The file's VOI LUT or window applied, scaled to [0, 1]; None when it has neither."""
    from pydicom.pixels import apply_voi, apply_windowing

    lut = ds.get("VOILUTSequence")
    if lut and lut[0].get("LUTDescriptor") is not None and lut[0].get("LUTData") is not None:
        depth = int(lut[0].LUTDescriptor[2])
        return np.asarray(apply_voi(np.rint(values).astype(np.int64), ds), np.float64) \
            / (2**depth - 1)
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None
    with np.errstate(over="ignore"):
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds)
        windowed = apply_windowing(values, ds)
    return (windowed - low) / (high - low)


def _first(value: Any) -> float:
    """The first of a (possibly multi-valued) DICOM number."""
    from pydicom.multival import MultiValue

    return float(value[0] if isinstance(value, MultiValue | list) else value)


def dicom_reference(description: dict[str, Any]) -> dict[str, Any]:
    """The DICOM reference of an input (the fields of the API's ``DicomReference``) from
    its :meth:`DecodedImage.describe`; empty for an input that is not DICOM."""
    if description.get("format") != "DICOM":
        return {}
    reference: dict[str, Any] = {
        "study_instance_uid": description.get("StudyInstanceUID", ""),
        "series_instance_uid": description.get("SeriesInstanceUID", ""),
        "sop_instance_uid": description.get("SOPInstanceUID", ""),
        "sop_class_uid": description.get("SOPClassUID", ""),
        "modality": description.get("Modality", ""),
        "frame": int(description.get("frame", 0)), "frames": int(description.get("frames", 1)),
        "window_center": float(description.get("WindowCenter", 0.0)),
        "window_width": float(description.get("WindowWidth", 0.0))}
    return reference
