"""Image files built in memory for the input tests and the fuzz suite: PNG and TIFF through
Pillow, DICOM through pydicom (with a patient's name and descriptions, as a scanner writes),
and a PNG header rewritten to declare another size."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

PATIENT = "Doe^Jane 1956-03-14"  # what must never reach a log
INSTANCE = UID("1.2.826.0.1.3680043.8.498.1")  # fixed: the same file for the same arguments


def pillow_file(width: int, height: int, fmt: str = "PNG", frames: int = 1,
                mode: str = "L") -> bytes:
    """A black ``width`` x ``height`` image of ``frames`` frames (TIFF) in ``fmt``."""
    images = [Image.new(mode, (width, height)) for _ in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, fmt, save_all=frames > 1, append_images=images[1:])
    return buffer.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The PNG ``data`` with its header declaring ``width`` x ``height`` (checksum fixed)."""
    header = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header)) + data[33:]


def dicom_file(rows: int, columns: int, frames: int = 1, pixel_data: bytes | None = None,
               description: str = PATIENT) -> bytes:
    """An 8-bit grey DICOM file (Secondary Capture) declaring ``rows`` x ``columns`` and
    ``frames``; its pixel data all zeros unless given; patient and descriptions set."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = INSTANCE
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = PATIENT, "P-0042"
    ds.StudyDescription = ds.SeriesDescription = description
    ds.Modality = "OT"
    ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
    if frames != 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (bytes(rows * columns * frames) if pixel_data is None else pixel_data)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def npy_file(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
