"""What leaves the gateway for the engine: the pixels and the tags the engine needs.

:func:`engine_copy` builds a new dataset from an allow-list — the instance's UIDs and
SOP class, modality, body part, the image pixel module, rescale and window — so no
patient, study or institution attribute (names, ids, dates, accession number, physicians)
can reach the orchestrator, its workers, its logs or its bucket, whatever the source
carries. The gateway keeps the source and puts the identity back into the results
itself (:mod:`styleprobe.gateway.results`).
"""

from __future__ import annotations

import hashlib
import io

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

ENGINE_TAGS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
    "BodyPartExamined", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "NumberOfFrames", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
    "PixelRepresentation", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "WindowCenter", "WindowWidth", "VOILUTFunction", "VOILUTSequence",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData", "PixelData",
)


def engine_copy(source: Dataset) -> bytes:
    """A DICOM file holding only :data:`ENGINE_TAGS` of ``source`` (its pixel data as
    stored, in its transfer syntax)."""
    copy = Dataset()
    for keyword in ENGINE_TAGS:
        if keyword in source:
            copy[keyword] = source[keyword]
    meta = FileMetaDataset()
    syntax = source.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian) \
        if hasattr(source, "file_meta") else ExplicitVRLittleEndian
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = source.SOPClassUID
    meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
    copy.file_meta = meta
    buffer = io.BytesIO()
    copy.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def idempotency_key(source: Dataset, model_set: str, attempt: int = 1) -> str:
    """The job's key: a hash of the SOP Instance UID and the model set, so a re-sent
    image, or a restarted gateway, finds its job instead of making a second; after a job
    that failed, the next ``attempt`` has a key of its own."""
    text = f"{source.SOPInstanceUID}|{model_set}"
    key = "dicom-gateway:" + hashlib.sha256(text.encode()).hexdigest()
    return key if attempt == 1 else f"{key}:{attempt}"
