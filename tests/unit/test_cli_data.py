"""`styleprobe data` and `styleprobe train`: folders in, checkpoints out, clear errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import Cli
from PIL import Image

from styleprobe.data.datasets import load_folder, phantom_set, render

torch.set_num_threads(1)





def assert_user_error(result: tuple[int, str, str], message: str) -> None:
    code, _, err = result
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("styleprobe: error: ") and message in lines[0], lines[0]


def make(cli: Cli, kind: str, out: Path, n: int, size: int) -> Path:
    code, stdout, err = cli("data", "make", kind, "--n", n, "--size", size, "--out", out)
    assert code == 0, err
    assert f"wrote {n} {kind} phantoms" in stdout
    return out


def write_png(path: Path, shape: tuple[int, ...]) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def test_data_make_writes_pngs_factors_and_masks(cli: Cli, tmp_path: Path) -> None:
    out = make(cli, "knee", tmp_path / "knee", n=5, size=32)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 5
    assert sorted(p.name for p in (out / "masks").glob("*.png")) == pngs
    with (out / "factors.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == pngs
    assert {"file", "label", "joint_space_narrowing", "kl_grade", "marker"} <= set(rows[0])

    data = load_folder(out, size=32, channels=1)
    rendered = render(phantom_set("knee", seed=0, size=32), 5)
    assert data.images.shape == (5, 32, 32, 1)
    np.testing.assert_array_equal(data.labels, rendered.labels)
    np.testing.assert_allclose(data.images, rendered.images, atol=1 / 255)
    np.testing.assert_allclose(data.factors["sclerosis"], rendered.factors["sclerosis"],
                               rtol=1e-5)


def test_train_classifier_reads_a_made_folder(cli: Cli, tmp_path: Path) -> None:
    folder = make(cli, "knee", tmp_path / "knee", n=40, size=16)
    code, out, err = cli("train", "classifier", "--data", folder, "--resolution", 16,
                         "--epochs", 1, "--class-names", "healthy,OA",
                         "--out", tmp_path / "clf")
    assert code == 0, err
    report = json.loads(out)
    assert 0.0 <= report["test_auc"] <= 1.0 and report["test_size"] == 8
    assert (tmp_path / "clf" / "classifier.pt").is_file()


def test_rgb_folder_trains_a_grayscale_classifier(cli: Cli, tmp_path: Path) -> None:
    folder = make(cli, "histology", tmp_path / "he", n=40, size=16)
    code, _, err = cli("train", "classifier", "--data", folder, "--channels", 1,
                       "--resolution", 16, "--epochs", 1, "--class-names", "normal,tumour",
                       "--out", tmp_path / "clf")
    assert code == 0, err


def test_data_make_rejects_bad_arguments(cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_user_error(cli("data", "make", "knee", "--n", 0, "--out", out), "--n")
    assert_user_error(cli("data", "make", "knee", "--size", 4, "--out", out), "--size")
    assert_user_error(cli("data", "make", "knee", "--n", 3, "--shortcut-rate", 1.5,
                          "--out", out), "shortcut rate")
    assert not out.exists()


def folder_of(tmp_path: Path, *images: tuple[str, tuple[int, ...]],
              extra: dict[str, bytes] | None = None) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, shape in images:
        write_png(folder / name, shape)
    for name, content in (extra or {}).items():
        (folder / name).write_bytes(content)
    return folder


BAD_FOLDERS = {
    "missing folder": ((), None, "does not exist"),
    "no images": ((), {"notes.txt": b"hello"}, "no images"),
    "unreadable image": ((("a.png", (16, 16)),), {"b.png": b"not a png"}, "cannot read b.png"),
    "mixed sizes": ((("a.png", (16, 16)), ("b.png", (20, 16))), None, "mixed sizes"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
@pytest.mark.parametrize("command", ["classifier", "gan"])
def test_train_rejects_bad_folders(cli: Cli, tmp_path: Path, case: str, command: str) -> None:
    images, extra, message = BAD_FOLDERS[case]
    folder = tmp_path / "nowhere" if case == "missing folder" else folder_of(
        tmp_path, *images, extra=extra)
    args = ["train", command, "--data", folder, "--resolution", 16, "--out", tmp_path / "run"]
    if command == "classifier":
        args += ["--class-names", "a,b"]
    else:
        args += ["--iterations", 1]
    assert_user_error(cli(*args), message)


def test_grayscale_folder_for_three_channels_is_rejected(cli: Cli, tmp_path: Path) -> None:
    folder = folder_of(tmp_path, ("a.png", (16, 16)), ("b.png", (16, 16)))
    assert_user_error(cli("train", "classifier", "--data", folder, "--channels", 3,
                          "--class-names", "a,b", "--resolution", 16,
                          "--out", tmp_path / "run"), "has 1 channel")


def test_folder_without_labels_or_class_names_is_rejected(cli: Cli, tmp_path: Path) -> None:
    folder = folder_of(tmp_path, *((f"{i}.png", (16, 16)) for i in range(5)))
    base = ["train", "classifier", "--data", folder, "--resolution", 16,
            "--out", tmp_path / "run"]
    assert_user_error(cli(*base), "--class-names")
    assert_user_error(cli(*base, "--class-names", "a,b"), "label")


def test_labels_beyond_class_names_are_rejected(cli: Cli, tmp_path: Path) -> None:
    folder = make(cli, "knee", tmp_path / "knee", n=10, size=16)
    assert_user_error(cli("train", "classifier", "--data", folder, "--resolution", 16,
                          "--class-names", "healthy", "--out", tmp_path / "run"),
                      "--class-names needs at least two classes")


def test_train_rejects_bad_numbers_and_checkpoints(cli: Cli, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert_user_error(cli("train", "classifier", "--data", "knee", "--n", 0,
                          "--out", run_dir), "--n")
    assert_user_error(cli("train", "classifier", "--data", "knee", "--n", 10,
                          "--shortcut-rate", 2, "--out", run_dir), "shortcut rate")
    assert_user_error(cli("train", "encoder", "--data", "knee", "--gan", tmp_path / "no.pt",
                          "--out", run_dir), "does not exist")
    assert not run_dir.exists()


def test_console_script_reports_one_line_and_exit_code_two(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("styleprobe")
    done = subprocess.run(
        [str(script), "train", "classifier", "--data", str(tmp_path / "nowhere"),
         "--class-names", "a,b", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"styleprobe: error: data folder {tmp_path / 'nowhere'} does not exist or is not a folder"]
