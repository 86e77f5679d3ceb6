"""factors.csv checked completely before any work: every problem one line naming the row
and the file, exit 2 from every command that reads a folder; generated broken folders end
in a valid load or a DataError, never another exception."""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from styleprobe.data.datasets import DataError, check_folder, load_folder

torch.set_num_threads(1)
NAMES = ["a.png", "b.png", "c.png", "d.png", "e.png"]
LABELS = [0, 1, 0, 1, 0]


def write_images(folder: Path, names: list[str] = NAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16), dtype=np.uint8)
    for name in names:
        Image.fromarray(pixels).save(folder / name)
    return folder


def labelled(folder: Path, rows: list[list[object]] | None = None,
             header: str = "file,label,size") -> Path:
    """Images and a factors.csv of ``rows`` (default: good rows for every image)."""
    write_images(folder)
    rows = rows if rows is not None else [[n, y, i] for i, (n, y) in
                                          enumerate(zip(NAMES, LABELS, strict=True))]
    text = header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    (folder / "factors.csv").write_text(text)
    return folder


def problems(folder: Path, classes: int | None = 2) -> list[str]:
    with pytest.raises(DataError) as caught:
        check_folder(folder, classes)
    return str(caught.value).splitlines()


def test_a_good_table_loads_labels_and_numeric_factors(tmp_path: Path) -> None:
    data = load_folder(labelled(tmp_path), size=16, channels=1, classes=2)
    assert data.labels.tolist() == LABELS
    assert data.factors["size"].tolist() == [0, 1, 2, 3, 4]


def test_a_byte_order_mark_and_integral_floats_are_accepted(tmp_path: Path) -> None:
    folder = write_images(tmp_path)
    rows = "".join(f"{n},{y}.0\n" for n, y in zip(NAMES, LABELS, strict=True))
    (folder / "factors.csv").write_bytes(b"\xef\xbb\xbf" + f"file,label\n{rows}".encode())
    assert check_folder(folder, 2).labels.tolist() == LABELS


@pytest.mark.parametrize(("label", "why"), [
    ("-1", "'-1' is not a class index (0..1)"),
    ("large", "'large' is not a class index (0..1)"),
    ("", "'' is not a class index (0..1)"),
    ("2", "'2' is not a class index (0..1)"),
    ("0.5", "'0.5' is not a class index (0..1)"),
])
def test_each_bad_label_is_one_line_with_row_and_file(tmp_path: Path, label: str,
                                                      why: str) -> None:
    rows = [[n, y, 0] for n, y in zip(NAMES, LABELS, strict=True)]
    rows[2][1] = label
    folder = labelled(tmp_path, rows)
    assert problems(folder) == [f"{folder / 'factors.csv'} row 4 (c.png): label {why}"]


def test_all_problems_are_listed_at_once(tmp_path: Path) -> None:
    rows = [["a.png", 0, 1], ["b.png", 3, 1], ["b.png", 1, 1], ["c.png", 1, "north"],
            ["zz.png", 0, 1], ["d.png", 1]]
    folder = labelled(tmp_path, rows)
    csv_path = folder / "factors.csv"
    assert problems(folder) == [
        f"{csv_path} row 3 (b.png): label '3' is not a class index (0..1)",
        f"{csv_path} row 4 (b.png): 'b.png' has another row above",
        f"{csv_path} row 5 (c.png): column 'size' has 'north', not a number (columns other "
        "than 'file' and 'label' must be numeric)",
        f"{csv_path} row 6 (zz.png): no image 'zz.png' in {folder}",
        f"{csv_path} row 7 (d.png): 2 fields, the header has 3",
        f"{csv_path}: no row for image 'e.png'",
    ]


def test_text_columns_are_refused_by_name(tmp_path: Path) -> None:
    rows = [[n, y, "hospital-a"] for n, y in zip(NAMES, LABELS, strict=True)]
    lines = problems(labelled(tmp_path, rows, header="file,label,site"))
    assert len(lines) == 5 and all("column 'site' has 'hospital-a'" in line for line in lines)


@pytest.mark.parametrize(("header", "message"), [
    ("name,label", "no 'file' column"),
    ("file,size", "no 'label' column"),
    ("file,label,label", "column 'label' appears more than once"),
    ("file,label,", "column 3 has no name"),
])
def test_bad_headers(tmp_path: Path, header: str, message: str) -> None:
    rows = [[n, y] + [0] * (header.count(",") - 1) for n, y in zip(NAMES, LABELS, strict=True)]
    lines = problems(labelled(tmp_path, rows, header=header))
    assert len(lines) == 1 and message in lines[0]


def test_empty_and_undecodable_tables(tmp_path: Path) -> None:
    folder = write_images(tmp_path)
    (folder / "factors.csv").write_text("\n\n")
    assert "is empty" in problems(folder)[0]
    (folder / "factors.csv").write_bytes(b"file,label\n\xff\xfe,1\n")
    assert "cannot be read as CSV text" in problems(folder)[0]


def test_without_classes_any_non_negative_integer_is_a_label(tmp_path: Path) -> None:
    rows = [[n, 7, 0] for n in NAMES]
    assert check_folder(labelled(tmp_path, rows), None).labels.tolist() == [7] * 5
    rows[0][1] = -1
    assert problems(labelled(tmp_path, rows), None)[0].endswith("(a non-negative integer)")


def test_a_long_list_is_cut_after_twenty_lines(tmp_path: Path) -> None:
    names = [f"{i:03d}.png" for i in range(30)]
    folder = write_images(tmp_path, names)
    (folder / "factors.csv").write_text("file,label\n" + "".join(f"{n},9\n" for n in names))
    lines = problems(folder)
    assert len(lines) == 21 and lines[-1] == "... and 10 more problems"


# -- every command that reads a folder ---------------------------------------------------




def bad_label_folder(folder: Path, label: str = "2") -> Path:
    rows = [[n, y, 0] for n, y in zip(NAMES, LABELS, strict=True)]
    rows[-1][1] = label
    return labelled(folder, rows)


@pytest.mark.parametrize("label", ["2", "-1", "large", ""])
def test_classifier_refuses_a_bad_label_wherever_it_lands(cli: Cli, tmp_path: Path,
                                                          label: str) -> None:
    """The 20% test split would take e.png; the check comes first, on every row."""
    folder = bad_label_folder(tmp_path / "data", label)
    code, _, err = cli("train", "classifier", "--data", folder, "--class-names", "small,large",
                    "--resolution", 16, "--out", tmp_path / "run")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"styleprobe: error: {folder / 'factors.csv'} row 6 (e.png): label {label!r} is not "
        "a class index (0..1)"]
    assert not (tmp_path / "run").exists()


def test_classifier_checks_the_test_folder_before_training(cli: Cli, tmp_path: Path) -> None:
    good = labelled(tmp_path / "data")
    bad = bad_label_folder(tmp_path / "test")
    code, _, err = cli("train", "classifier", "--data", good, "--test", bad,
                    "--class-names", "small,large", "--resolution", 16,
                    "--out", tmp_path / "run")
    assert code == 2 and f"{bad / 'factors.csv'} row 6 (e.png)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["gan", "encoder"])
def test_gan_and_encoder_check_the_table_first(cli: Cli, tmp_path: Path, command: str) -> None:
    folder = bad_label_folder(tmp_path / "data", "large")
    extra = ["--gan", tmp_path / "no.pt"] if command == "encoder" else []
    code, _, err = cli("train", command, "--data", folder, *extra, "--out", tmp_path / "run")
    assert code == 2 and "row 6 (e.png): label 'large'" in err  # before the missing GAN


def test_cohort_run_checks_the_folder_against_the_model_set(cli: Cli, tmp_path: Path,
                                                           tiny_repository: Path,
                                                           monkeypatch) -> None:
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
    folder = bad_label_folder(tmp_path / "data")
    code, _, err = cli("cohort", "run", str(folder), "--model-set", "tiny",
                    "--out", tmp_path / "store")
    assert code == 2 and "row 6 (e.png): label '2' is not a class index (0..1)" in err


# -- generated broken folders --------------------------------------------------------------

CELLS = st.sampled_from(["0", "1", "2", "-1", "1.0", "0.5", "", " ", "large", "nan", "inf",
                         "1e400", "x,y", '"', "a.png", "b.png", "zz.png", "é", "\ufeff"])
FILE_CELLS = st.sampled_from([*NAMES, "zz.png", "", "A.PNG", "masks/a.png", "notes.txt"])
HEADERS = st.lists(st.sampled_from(["file", "label", "size", "site", "", "File", "\ufefffile"]),
                   min_size=0, max_size=5)


@st.composite
def broken_folders(draw: st.DrawFn) -> tuple[list[str], bytes]:
    """Image names and the bytes of a factors.csv: good rows made worse at random."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True))
    header = draw(st.one_of(st.just(["file", "label", "size"]), HEADERS))
    rows = [[n, str(i % 2), str(i)] for i, n in enumerate(names)]
    rows = draw(st.permutations(rows))
    rows = [[draw(st.one_of(st.just(c), FILE_CELLS if j == 0 else CELLS))
             for j, c in enumerate(row)] for row in rows]
    rows += draw(st.lists(st.lists(st.one_of(FILE_CELLS, CELLS), max_size=4), max_size=3))
    out = io.StringIO()
    csv.writer(out).writerows([header, *rows])
    text = draw(st.sampled_from([out.getvalue(), "", "\n", out.getvalue()[:-3]]))
    encoded = text.encode()
    return names, draw(st.sampled_from([encoded, b"\xef\xbb\xbf" + encoded,
                                        encoded + b"\xff", encoded.replace(b",", b";")]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=broken_folders(), classes=st.sampled_from([None, 1, 2, 3]))
def test_generated_folders_load_or_fail_with_one_line_per_problem(
        case: tuple[list[str], bytes], classes: int | None) -> None:
    names, table = case
    folder = Path(tempfile.mkdtemp())
    try:
        write_images(folder, names)
        (folder / "factors.csv").write_bytes(table)
        try:
            data = load_folder(folder, size=16, channels=1, classes=classes)
        except DataError as exc:
            lines = str(exc).splitlines()
            assert lines and all(line.strip() for line in lines), repr(str(exc))
            assert all(line.startswith((str(folder), "... and ")) for line in lines), lines
        else:
            assert data.names == sorted(names) and data.labels is not None
            assert classes is None or int(data.labels.max()) < classes
            assert all(np.isfinite(v).all() for v in data.factors.values())
    finally:
        shutil.rmtree(folder)
