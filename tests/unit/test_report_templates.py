"""The three HTML reports escape what they show: a name or reason with markup in it appears
as text, never as markup."""

from __future__ import annotations

from pathlib import Path

from styleprobe.cohort.ledger import CohortSpec
from styleprobe.cohort.report import CohortReport
from styleprobe.cohort.rows import DONE, FAILED, ImageRow
from styleprobe.evaluation.report import page_html
from styleprobe.explain.quality import Quality
from styleprobe.explain.render import report_html
from styleprobe.explain.result import DirectionInfo, ExplanationResult, FlipInfo, InputInfo
from styleprobe.explain.spec import JobSpec, LambdaGrid
from styleprobe.storage.local import LocalStore

SCRIPT = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
PNG = b"\x89PNG\r\n\x1a\n"


def test_explanation_report_escapes_names_and_reasons() -> None:
    result = ExplanationResult(
        job_id="j", model_set="knee", target=f"OA{SCRIPT}", class_names=["healthy", "OA"],
        threshold=0.5, input=InputInfo("abc", {"file": SCRIPT}), models={"classifier": "1"},
        direction=DirectionInfo("directions/d", 0.9, 0.8, 0.9, 200, 0.5, 1.0, {}),
        lambdas=[-1.0, 0.0, 1.0], probabilities=[0.2, 0.5, 0.8], prediction_input=0.7,
        prediction_reconstruction=0.6, flip=FlipInfo(True, "positive", 1.0, 0.5, 0.51),
        quality=Quality(0.1, 0.01, True, True, [f"pixel MSE {SCRIPT}"]))
    page = report_html(result, {"input": PNG, "animation": b"GIF89a"})
    assert "<script>" not in page
    assert f"UNRELIABLE explanation: pixel MSE {ESCAPED}" in page
    assert f"<td>file: {ESCAPED}</td>" in page
    assert page.count('src="data:image/png;base64,') == 1
    assert page.count('src="data:image/gif;base64,') == 1
    assert "<td>+1.0000</td><td>0.8000</td>" in page


def test_cohort_report_escapes_images_and_failures(tmp_path: Path) -> None:
    spec = CohortSpec(cohort_id="c1", threshold=0.5, job=JobSpec(
        model_set="knee", target=f"OA{SCRIPT}", lambdas=LambdaGrid(-2, 2, 5)))
    report = CohortReport(spec)
    report.add(ImageRow(image=f"a{SCRIPT}.png", status=DONE, prediction_input=0.6,
                        prediction_reconstruction=0.6, flip_found=True, flip_lambda=0.5,
                        unreliable=False))
    report.add(ImageRow(image="b.png", status=FAILED, error=f"cannot decode {SCRIPT}"))
    page = report.html(LocalStore(tmp_path))
    assert "<script>" not in page
    assert f"<td>a{ESCAPED}.png</td>" in page
    assert f"<td>cannot decode {ESCAPED}</td>" in page
    assert "<tr><th>image</th><th>numbers</th>" in page  # the template's own markup stays


def test_evaluation_report_escapes_text_but_renders_its_inline_markdown() -> None:
    page = page_html([("h1", f"Evaluation {SCRIPT}"), ("p", f"**bold** `code` {SCRIPT}"),
                      ("table", (["factor", SCRIPT], [[SCRIPT, 0.5]])),
                      ("figure", ("plot.png", f"caption {SCRIPT}"))], {"plot.png": PNG})
    assert "<script>" not in page
    assert f"<title>Evaluation {ESCAPED}</title>" in page
    assert f"<p><strong>bold</strong> <code>code</code> {ESCAPED}</p>" in page
    assert f"<th>{ESCAPED}</th>" in page and f"<td>{ESCAPED}</td><td>0.5</td>" in page
    assert f"<figcaption>caption {ESCAPED}</figcaption>" in page
