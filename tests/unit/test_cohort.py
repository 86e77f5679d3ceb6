"""Cohorts in the embedded mode on the tiny model set: rows, failures, resuming, summary."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from styleprobe.backends.base import BackendError
from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.cli import run
from styleprobe.cohort.ledger import CohortError, CohortLedger, CohortSpec, chunked
from styleprobe.cohort.report import CohortReport
from styleprobe.cohort.rows import DONE, FAILED, ImageRow, lambda_column
from styleprobe.cohort.runner import CohortRunner, list_folder
from styleprobe.explain.spec import JobSpec, LambdaGrid, ProbeSettings
from styleprobe.modelset import QualityGate
from styleprobe.storage.local import LocalStore

LAMBDAS = "-2:2:5"
SPEC = CohortSpec(cohort_id="c1", threshold=0.5, job=JobSpec(
    model_set="tiny", target="sick", lambdas=LambdaGrid.parse(LAMBDAS),
    probe=ProbeSettings(samples=200)))
GOOD = [f"img{i:02d}.png" for i in range(5)]
BROKEN = "img02b.png"  # sorts among the good ones


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 20x20 grey PNGs and one file that is no image at all."""
    out = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(3)
    for name in GOOD:
        pixels = (rng.random((20, 20)) * 255).astype(np.uint8)
        Image.fromarray(pixels, "L").save(out / name)
    (out / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (out / "notes.txt").write_text("not an image suffix: ignored")
    return out


@pytest.fixture(scope="module")
def tiny(tiny_repository: Path) -> LocalBackend:
    return LocalBackend(tiny_repository, "tiny")


class FailAfter:
    """Delegates to ``inner``; the encoder fails from its ``n + 1``-th call on."""

    def __init__(self, inner: CountingBackend, n: int) -> None:
        self.inner, self.model_set, self.n = inner, inner.model_set, n

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def encoder(self, image: np.ndarray) -> np.ndarray:
        if self.inner.calls["encoder"] >= self.n:
            raise BackendError("model server went away")
        return self.inner.encoder(image)


def runner_for(backend: object, store: LocalStore, folder: Path) -> CohortRunner:
    return CohortRunner(store, CohortLedger(store, SPEC.cohort_id), lambda name: folder / name,
                        lambda: backend)


def test_list_folder_and_chunks(folder: Path, tmp_path: Path) -> None:
    assert list_folder(folder) == sorted([*GOOD, BROKEN])
    assert list(chunked("abcdefg", 3)) == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
    with pytest.raises(CohortError, match="no images"):
        list_folder(tmp_path)
    with pytest.raises(CohortError, match="chunk size"):
        list(chunked("ab", 0))


def test_cohort_rows_summary_and_report(tiny: LocalBackend, folder: Path,
                                        tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    counting = CountingBackend(tiny)
    # the untrained tiny set reconstructs nothing well: a gate that lets every image be
    # reliable, so that the report's contact sheet (reliable images only) has cases
    counting.model_set = replace(tiny.model_set, quality=QualityGate(
        max_pixel_mse=1.0, require_agreement=False, max_probability_shift=1.0))
    seen: list[tuple[str, str, bool]] = []
    images = list_folder(folder)
    summary = runner_for(counting, store, folder).run(
        SPEC, images, lambda row, skipped: seen.append((row.image, row.status, skipped)),
        chunk_size=4)

    assert (summary.total, summary.done, summary.failed, summary.pending) == (6, 5, 1, 0)
    assert seen == [(name, FAILED if name == BROKEN else DONE, False) for name in images]
    assert len(store.list("directions/")) == 1  # probed once for the whole cohort
    assert counting.rows["encoder"] == 5  # one encoding per readable image

    with io.StringIO(store.get(summary.outputs["csv"]).decode()) as fh:
        table = list(csv.DictReader(fh))
    assert [r["image"] for r in table] == images
    broken = table[images.index(BROKEN)]
    assert broken["status"] == FAILED and "damaged" in broken["error"]
    columns = [lambda_column(v) for v in (-2, -1, 0, 1, 2)]
    assert columns == ["p_lambda_-2", "p_lambda_-1", "p_lambda_+0", "p_lambda_+1",
                       "p_lambda_+2"]
    for row in table:
        if row["status"] == DONE:
            assert all(0.0 <= float(row[c]) <= 1.0 for c in columns)
            assert store.exists(row["manifest"])

    parquet = pq.read_table(io.BytesIO(store.get(summary.outputs["parquet"])))
    assert parquet.num_rows == 6 and parquet.column_names == list(table[0])
    assert parquet.column("flip_found").type == "bool"
    assert parquet.column("status").to_pylist().count(DONE) == 5

    report = store.get(summary.outputs["report"]).decode()
    assert "Distribution of the flip λ" in report and BROKEN in report
    assert report.count("<img") >= 4  # the histogram and pictures of contact-sheet cases


def test_restart_skips_finished_images_and_duplicates_nothing(tiny: LocalBackend, folder: Path,
                                                              tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    images = list_folder(folder)
    counting = CountingBackend(tiny)
    with pytest.raises(BackendError):  # the model server dies during the third chunk
        runner_for(FailAfter(counting, 2), store, folder).run(SPEC, images, chunk_size=2)
    ledger = CohortLedger(store, SPEC.cohort_id)
    assert ledger.finished_count() == 4  # three explained, one failed to decode

    resumed = CountingBackend(tiny)
    skipped: list[str] = []
    summary = runner_for(resumed, store, folder).run(
        SPEC, images, lambda row, was: skipped.append(row.image) if was else None)
    assert skipped == images[:4]
    assert resumed.rows["encoder"] == 2  # only the two unfinished images
    assert (summary.done, summary.failed, summary.total) == (5, 1, 6)
    jobs = {key.split("/")[1] for key in store.list("jobs/")}
    assert len(jobs) == 5  # one job per explained image, none left from the failure
    assert len(store.list("cohorts/c1/done/")) == 6


def test_resume_with_other_settings_is_refused(tiny: LocalBackend, folder: Path,
                                               tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    runner = runner_for(tiny, store, folder)
    runner.prepare(SPEC)
    assert CohortLedger(store, "c1").start(SPEC) is True  # same settings: a resumed run
    with pytest.raises(CohortError, match="lambdas"):
        other = replace(SPEC, job=replace(SPEC.job, lambdas=LambdaGrid(-3, 3, 7)))
        runner_for(tiny, store, folder).prepare(other)
    with pytest.raises(CohortError, match="cohort id"):
        CohortLedger(store, "../escape")


def test_report_ranks_reliable_cases_by_sensitivity(tmp_path: Path) -> None:
    """The unreliable "u" flips at a small λ too, but its drifted reconstruction's λ says
    nothing of its input: it is counted, not ranked."""
    report = CohortReport(SPEC, cases=2)

    def row(name: str, flip: float | None, p: float = 0.6, status: str = DONE) -> ImageRow:
        return ImageRow(image=name, status=status, prediction_input=p,
                        prediction_reconstruction=p, flip_found=flip is not None,
                        flip_lambda=flip, unreliable=name.startswith("u"))

    for r in [row("a", 1.5), row("b", -0.2), row("c", None, 0.9), row("u", 0.7),
              row("d", None, 0.55), row("x", None, status=FAILED)]:
        report.add(r)
    assert [r.image for r in report.most_sensitive()] == ["b", "a"]
    assert [r.image for r in report.least_sensitive()] == ["c", "d"]
    assert report.counts["unreliable"] == 1 and report.counts["flipped"] == 3
    assert report.flip_lambdas == [1.5, -0.2, 0.7]
    assert math.isinf(row("c", None).sensitivity)
    page = report.html(LocalStore(tmp_path))  # no manifests there: no pictures, no error
    assert "1 of 5 (20.0%)" in page  # one unreliable of five explained


def test_cli_runs_resumes_and_refuses_bad_input(tiny_repository: Path, folder: Path,
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("STYLEPROBE_PROBE_SAMPLES", "200")
    out = tmp_path / "out"
    argv = ["cohort", "run", str(folder), "--model-set", "tiny", "--lambdas", "-2:2:3",
            "--out", str(out)]
    assert run(argv) == 0
    first = capsys.readouterr()
    assert "6 images: 5 explained, 1 failed" in first.out
    table = Path(first.out.split("csv: ")[1].split()[0])
    assert table.is_file() and table.is_relative_to(out)
    jobs = sorted(p.name for p in (out / "jobs").iterdir())

    assert run(argv) == 0  # the same command again: resumed, nothing redone
    assert "6 images: 5 explained, 1 failed" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "jobs").iterdir()) == jobs

    # no pictures by default (STYLEPROBE_COHORT_RENDER): drawn when asked for
    image = next(row["job_id"] for row in csv.DictReader(table.open()) if row["job_id"]
                 and row["status"] == "done")
    assert not (out / "jobs" / image / "strip.png").exists()
    assert run(["cohort", "draw", image, "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"{image}: {out / 'jobs' / image / 'report.html'}\n"
    assert (out / "jobs" / image / "strip.png").is_file()
    assert run(["cohort", "draw", "nope", "--out", str(out)]) == 2
    assert "no finished image 'nope'" in capsys.readouterr().err

    for bad, message in [(["--target", "nobody"], "nobody"), (["--lambdas", "3:1:4"], "less"),
                         (["--chunk-size", "0"], "chunk-size")]:
        assert run([*argv[:-1], str(tmp_path / "other"), *bad]) == 2
        assert message in capsys.readouterr().err
    assert run(["cohort", "run", str(tmp_path / "missing"), "--model-set", "tiny"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
