"""The fuzz suite's generators (Hypothesis strategies) and its tally.

Requests of every kind with each field either unset or drawn from random and boundary
values (NaN, infinities, int32 extremes, the ranges' edges, path tricks); image files
generated (PNG, JPEG, TIFF, DICOM, .npy), declaring huge sizes or frame counts, and
mutated (truncated, bytes overwritten, DICOM headers broken); λ grid strings. Each fuzz
test counts its cases by outcome in :data:`TALLY`; tests/conftest.py prints the counts at
the end of the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

from image_files import dicom_file, npy_file, pillow_file, with_png_size
from styleprobe.api import pb

TALLY: Counter[str] = Counter()  # "<suite>: <outcome>" -> cases


def tally(suite: str, outcome: str) -> None:
    TALLY[f"{suite}: {outcome}"] += 1


INT32 = st.one_of(
    st.integers(-2**31, 2**31 - 1),
    st.sampled_from([-2**31, -1, 1, 2, 10, 11, 19, 20, 64, 65, 100_000, 100_001, 2**31 - 1]))
DOUBLES = st.one_of(
    st.floats(),  # NaN and the infinities included
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 5e-324, 1e-300, 1e-6,
                     0.05, 0.2, 0.5, 1.0, 1.5, 1e6, 1e300, -1.0]))
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "/", "..", "../x", "a/../b", "inputs/a.png", "jobs/", "cohorts/x",
                     "directions/x.json", "tiny", "sick", "healthy", "exposure", "x" * 300]))
NUMBER_TEXT = st.one_of(DOUBLES.map(str), INT32.map(str),
                        st.text(alphabet="0123456789.-+eEinfa_ ", max_size=8))
LAMBDAS = st.one_of(
    st.text(max_size=30),
    st.builds(lambda *parts: ":".join(parts), NUMBER_TEXT, NUMBER_TEXT, NUMBER_TEXT),
    st.sampled_from(["-4:4:17", "-2:2:5", "-100:100:257", "-100.1:0:3", "0:1:258", "1e309:2:3"]))


def unset_or(values: st.SearchStrategy, unset: object) -> st.SearchStrategy:
    """``unset`` three times in four (so that whole requests are valid often enough),
    else ``values``."""
    return st.sampled_from([True, True, True, False]).flatmap(
        lambda is_unset: st.just(unset) if is_unset else values)


PROBE = st.builds(
    pb.ProbeOptions, samples=unset_or(INT32, 0), seed=unset_or(INT32, 0),
    truncation_psi=unset_or(DOUBLES, 0.0), test_fraction=unset_or(DOUBLES, 0.0),
    regularization=unset_or(DOUBLES, 0.0))
OPTIONS = unset_or(st.builds(
    pb.ExplainOptions,
    orthogonalize=unset_or(st.lists(st.one_of(st.sampled_from(["exposure", "rotation"]),
                                               TEXT), max_size=3), []),
    probe=PROBE, search_rounds=unset_or(INT32, 0), search_points=unset_or(INT32, 0)),
    pb.ExplainOptions())
MODEL_SETS = unset_or(st.one_of(st.just(""), TEXT), "tiny")
TARGETS = unset_or(st.one_of(st.sampled_from(["sick", "healthy"]), TEXT), "")


def _mutated(data: bytes, draw: Callable[[st.SearchStrategy], object]) -> bytes:
    """``data`` truncated, or with a few bytes overwritten (most in the header)."""
    if not data:
        return data
    if draw(st.booleans()):
        return data[:draw(st.integers(0, len(data) - 1))]  # type: ignore[misc]
    out = bytearray(data)
    header = min(len(out), 512)
    for _ in range(draw(st.integers(1, 8))):  # type: ignore[call-overload]
        at = draw(st.integers(0, header - 1))
        out[at] = draw(st.integers(0, 255))  # type: ignore[call-overload]
    return bytes(out)


SIDES = st.integers(1, 48)


@st.composite
def image_files(draw: Callable[[st.SearchStrategy], object]) -> bytes:
    """An image file, generated in one of the formats, perhaps declaring a huge size, and
    perhaps mutated."""
    kind = draw(st.sampled_from(["png", "jpeg", "tiff", "dicom", "npy", "huge png",
                                 "huge dicom", "many frames", "bytes"]))
    width, height = draw(SIDES), draw(SIDES)
    data: bytes
    if kind == "png":
        data = pillow_file(width, height, "PNG", mode=draw(st.sampled_from(
            ["L", "RGB", "RGBA", "I;16", "1", "P"])))
    elif kind == "jpeg":
        data = pillow_file(width, height, "JPEG", mode=draw(st.sampled_from(["L", "RGB"])))
    elif kind == "tiff":
        data = pillow_file(width, height, "TIFF", frames=draw(st.integers(1, 3)),
                           mode=draw(st.sampled_from(["L", "RGB", "I;16", "F"])))
    elif kind == "dicom":
        frames = draw(st.integers(1, 3))
        size = width * height * frames
        data = dicom_file(height, width, frames, bytes(draw(st.sampled_from(
            [size, size // 2, size + 7, 0]))))
    elif kind == "npy":
        dtype = draw(st.sampled_from(["uint8", "uint16", "float32", "float64", "bool", "int8"]))
        shape = draw(st.sampled_from([(height, width), (height, width, 3), (3, height, width),
                                      (height,), (height, width, 2)]))
        data = npy_file(np.full(shape, draw(DOUBLES) if "float" in dtype else 1, dtype))
    elif kind == "huge png":
        data = with_png_size(pillow_file(16, 16), draw(st.integers(1, 2**31 - 1)),
                             draw(st.integers(1, 2**31 - 1)))
    elif kind == "huge dicom":
        data = dicom_file(draw(st.integers(1, 65535)), draw(st.integers(1, 65535)),
                          pixel_data=bytes(64))
    elif kind == "many frames":
        data = dicom_file(8, 8, draw(st.integers(2, 2**31 - 1)), pixel_data=bytes(64))
    else:
        data = draw(st.binary(max_size=600))  # type: ignore[assignment]
    return _mutated(data, draw) if draw(st.booleans()) else data


IMAGES = image_files()
