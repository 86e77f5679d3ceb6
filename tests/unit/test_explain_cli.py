"""``styleprobe explain`` and ``styleprobe models`` on the tiny model set: output, and
bad input answered with one line on stderr, exit code 2 and nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import MPEG4HP41

from styleprobe.cli import run


@pytest.fixture(autouse=True)
def tiny_settings(tiny_repository: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("STYLEPROBE_PROBE_SAMPLES", "200")


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "knee.png"
    pixels = (np.random.default_rng(0).random((40, 48)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_explain_prints_the_summary_and_the_report(png: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = run(["explain", str(png), "--model-set", "tiny", "--lambdas", "-2:2:5",
                "--orthogonalize", "exposure", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    report = Path(printed.split("report: ")[1].split()[0])
    manifest = json.loads(Path(printed.split("manifest: ")[1].split()[0]).read_text())
    assert report.is_file() and report.is_relative_to(out)
    assert manifest["lambdas"] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert list(manifest["direction"]["orthogonalized_against"]) == ["exposure"]
    assert "P(sick) on the input" in printed and "reliability: UNRELIABLE" in printed
    assert ("flips at" in printed) or ("no flip within range" in printed)


def test_models_lists_sets_targets_and_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["models"]) == 0
    printed = capsys.readouterr().out
    assert "tiny: 16x16, 1 channel(s); classes healthy, sick (default target sick)" in printed
    assert "exposure, rotation" in printed and "tiny-classifier:1:" in printed


def _write(tmp_path: Path, name: str, data: bytes | np.ndarray) -> str:
    path = tmp_path / name
    if isinstance(data, np.ndarray):
        np.save(path, data)
    else:
        path.write_bytes(data)
    return str(path)


def _undecodable_dicom(tmp_path: Path) -> str:
    """A compressed DICOM in a transfer syntax (MPEG-4) no pixel decoder here reads.

    (MR_small_jpeg_ls_lossless.dcm served until a JPEG-LS plugin came with highdicom.)
    """
    dataset = dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    dataset.file_meta.TransferSyntaxUID = MPEG4HP41
    path = tmp_path / "mpeg4.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return str(path)


BAD_INPUTS = {
    "missing file": (lambda d: str(d / "nope.png"), [], "does not exist"),
    "empty file": (lambda d: _write(d, "empty.png", b""), [], "empty"),
    "not an image": (lambda d: _write(d, "junk.png", b"\x00junk" * 100), [], "not a supported"),
    "DICOM without pixels": (lambda d: get_testdata_file("rtplan.dcm"), [], "pixel data"),
    "undecodable DICOM": (_undecodable_dicom, [], "cannot decode"),
    "two channels": (lambda d: _write(d, "two.npy", np.zeros((16, 16, 2), np.float32)), [],
                     "shape"),
    "NaN": (lambda d: _write(d, "nan.npy", np.full((16, 16), np.nan, np.float32)), [], "NaN"),
    "unknown model set": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                          ["--model-set", "brain"], "unknown model set 'brain'"),
    "unknown target": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                       ["--target", "OA"], "unknown target 'OA'"),
    "malformed lambdas": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                          ["--lambdas", "-3:3"], "start:stop:steps"),
    "too many steps": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                       ["--lambdas", "-3:3:1000"], "2..257"),
    "unknown confounder": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                           ["--orthogonalize", "blur"], "no nuisance direction blur"),
    "unknown backend": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                        ["--backend", "carrier-pigeon"], "unknown model backend"),
    "too few probe samples": (lambda d: _write(d, "ok.npy", np.zeros((16, 16), np.float32)),
                              ["--probe-samples", "3"], "20..100000"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_nothing_written(
        case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, extra, message = BAD_INPUTS[case]
    image = make(tmp_path)
    out = tmp_path / "out"
    code = run(["explain", image, "--model-set", "tiny", "--out", str(out), *extra])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("styleprobe: error: "), captured.err
    assert message in lines[0]
    assert not out.exists()
