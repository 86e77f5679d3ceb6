"""Structured (JSON) logging for every StyleProbe process.

Each line carries the job id and request id of the work in progress
(:func:`log_context` sets them in context variables, so they follow a task or an
``asyncio`` call without being passed around), and passes a redaction guard
(:class:`RedactionFilter`): pixel data and DICOM patient identifiers never reach a log.
A client's file name or object key is logged only as its :func:`fingerprint`.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

job_id: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
CONTEXT = {"job_id": job_id, "request_id": request_id}

REDACTED = "[redacted]"
# DICOM attributes that identify a patient or an encounter (keywords, compared without
# case and underscores), beyond every keyword that starts with "patient".
IDENTIFYING_KEYWORDS = frozenset({
    "otherpatientids", "otherpatientnames", "otherpatientidssequence", "issuerofpatientid",
    "accessionnumber", "studyid", "institutionname", "institutionaddress",
    "referringphysicianname", "performingphysicianname", "operatorsname",
    "physiciansofrecord", "nameofphysiciansreadingstudy", "requestingphysician",
    "medicalrecordlocator", "studyinstanceuid", "seriesinstanceuid", "sopinstanceuid",
    "deviceserialnumber", "stationname", "studydate", "studytime", "acquisitiondatetime",
    "responsibleperson", "ethnicgroup", "militaryrank", "occupation",
})
# DICOM patient data as it appears in text: a tag of group 0010 (the Patient module), a
# keyword, or pydicom's element names ("Patient's Name").
_PATIENT_TEXT = re.compile(
    r"\(0010,\s*[0-9a-f]{4}\)|\b0010[0-9a-f]{4}\b"
    r"|\bPatient'?s?\s?(Name|ID|Birth\s?Date|Address|Age|Sex)\b"
    r"|\bOtherPatient(IDs|Names)\b|\bAccession\s?Number\b", re.IGNORECASE)
_PIXEL_TYPES = (bytes, bytearray, memoryview)


@contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Within the block, every log line carries these fields (``job_id``, ``request_id``)."""
    unknown = set(values) - set(CONTEXT)
    if unknown:
        raise ValueError(f"unknown log context {sorted(unknown)}; one of: {sorted(CONTEXT)}")
    tokens = [(CONTEXT[name], CONTEXT[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def fingerprint(text: str) -> str:
    """What a log line says in place of a client's file name or object key (which may name
    a patient): the first 12 hex digits of its SHA-256."""
    return f"sha256:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def is_identifying_key(name: str) -> bool:
    """Whether a field named ``name`` would hold a DICOM patient identifier."""
    key = name.replace("_", "").replace("-", "").lower()
    return key.startswith("patient") or key in IDENTIFYING_KEYWORDS


def redact_value(value: Any) -> Any:
    """``value``, or a short description in its place if it holds pixel data (an array,
    raw bytes) or a DICOM data set."""
    if isinstance(value, _PIXEL_TYPES):
        return f"{REDACTED} {len(value)} bytes"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):  # numpy arrays and torch tensors
        return f"{REDACTED} array of shape {tuple(shape)}"
    if type(value).__module__.startswith("pydicom"):
        return f"{REDACTED} {type(value).__name__}"
    if isinstance(value, dict):
        return {k: REDACTED if is_identifying_key(str(k)) else redact_value(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v) for v in value)
    return value


class RedactionFilter(logging.Filter):
    """Rewrites a record so that no pixel data or DICOM patient identifier is logged.

    Message arguments and ``extra`` fields that hold arrays, bytes or pydicom objects
    become short descriptions; fields named like patient identifiers (``PatientName``,
    ``patient_id``, ``AccessionNumber``, ...) are replaced; a message or exception text
    that names DICOM patient data is replaced whole. The record is always kept.
    """

    RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict):
            record.args = redact_value(record.args)
        elif record.args:
            record.args = tuple(redact_value(a) for a in record.args)
        for name in list(record.__dict__):
            if name in self.RESERVED:
                continue
            record.__dict__[name] = (REDACTED if is_identifying_key(name)
                                     else redact_value(record.__dict__[name]))
        if _PATIENT_TEXT.search(record.getMessage()):
            record.msg = f"{REDACTED} message that named DICOM patient data"
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            text = str(record.exc_info[1])
            if _PATIENT_TEXT.search(text):
                kind = type(record.exc_info[1]).__name__
                record.exc_info = None
                record.exc_text = f"{kind}: {REDACTED} exception text"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job and request ids in
    context, and any ``extra`` fields."""

    RESERVED = RedactionFilter.RESERVED | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: var.get() for name, var in CONTEXT.items() if var.get()})
        entry.update({k: v for k, v in record.__dict__.items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """Send JSON lines to stderr at ``level``, through the redaction guard."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactionFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
