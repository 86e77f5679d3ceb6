"""The cohort report (one self-contained HTML page): the distribution of flip λ, the share
of unreliable reconstructions, failures, and a contact sheet of the most and least
sensitive images among those whose reconstruction the quality gate calls reliable.

:class:`CohortReport` takes the rows one at a time and keeps only numbers and a bounded
set of candidates for the contact sheet; only the pictures of those few cases are read
back from their jobs when the page is drawn (drawn then from the stored arrays, for a
cohort that renders nothing).
"""

from __future__ import annotations

import heapq
import io
import json
import math
from dataclasses import asdict, dataclass, field

from matplotlib.figure import Figure

from styleprobe.cohort.ledger import CohortSpec
from styleprobe.cohort.rows import DONE, FAILED, PENDING, ImageRow
from styleprobe.explain.engine import case_pictures
from styleprobe.storage.base import ArtifactStore, ObjectNotFound
from styleprobe.templates import render_template

CONTACT_CASES = 8  # images in each half of the contact sheet
LISTED_FAILURES = 50  # failed images named in the report (all are in the table)
Case = tuple[ImageRow, list[tuple[str, bytes]]]  # a contact-sheet row, its pictures


@dataclass(order=True)
class _Ranked:
    key: tuple[float, float, str]
    row: ImageRow = field(compare=False)


class CohortReport:
    """Accumulates the rows of a cohort and draws its HTML report."""

    def __init__(self, spec: CohortSpec, cases: int = CONTACT_CASES) -> None:
        self.spec, self.cases = spec, cases
        self.counts = {DONE: 0, FAILED: 0, PENDING: 0, "unreliable": 0, "flipped": 0}
        self.flip_lambdas: list[float] = []
        self.failures: list[tuple[str, str]] = []
        self._most: list[_Ranked] = []  # max-heap (negated keys) of the most sensitive
        self._least: list[_Ranked] = []  # min-heap of the least sensitive

    @property
    def total(self) -> int:
        return self.counts[DONE] + self.counts[FAILED] + self.counts[PENDING]

    def add(self, row: ImageRow) -> None:
        """Count one row and keep it if it is among the most or least sensitive so far."""
        self.counts[row.status] += 1
        if row.status == FAILED and len(self.failures) < LISTED_FAILURES:
            self.failures.append((row.image, row.error))
        if row.status != DONE:
            return
        self.counts["unreliable"] += bool(row.unreliable)
        margin = abs((row.prediction_reconstruction or 0.0) - self.spec.threshold)
        flip = row.flip_lambda if row.flip_found else None
        if flip is not None:
            self.counts["flipped"] += 1
            self.flip_lambdas.append(flip)
        if row.unreliable:  # its flip λ is the reconstruction's, not the input's
            return
        if flip is not None:
            _push(self._most, _Ranked((-row.sensitivity, -margin, row.image), row), self.cases)
        _push(self._least, _Ranked((row.sensitivity, margin, row.image), row), self.cases)

    def most_sensitive(self) -> list[ImageRow]:
        """Flipped images with a reliable reconstruction, smallest ``|flip λ|`` first."""
        return [r.row for r in sorted(self._most, reverse=True)]

    def least_sensitive(self) -> list[ImageRow]:
        """Images with a reliable reconstruction and no flip (or the largest ``|flip λ|``),
        farthest from the threshold first."""
        return [r.row for r in sorted(self._least, reverse=True)]

    def html(self, store: ArtifactStore) -> str:
        """The report page; pictures of the contact-sheet cases are read from ``store``."""
        s, job = self.spec, self.spec.job
        done = self.counts[DONE]
        share = self.counts["unreliable"] / done if done else 0.0
        summary = [
            ("Images", self.total), ("Explained", done), ("Failed", self.counts[FAILED]),
            ("Pending (not finished)", self.counts[PENDING]),
            ("Unreliable reconstructions", f"{self.counts['unreliable']} of {done} "
                                           f"({100 * share:.1f}%)"),
            ("Prediction flips within the λ grid", f"{self.counts['flipped']} of {done}"),
            ("Most and least sensitive", "ranked among reliable reconstructions only"),
            ("Model set / target / threshold",
             f"{job.model_set} / {job.target} / {s.threshold:g}"),
            ("λ grid", str(job.lambdas)),
            ("Probe", json.dumps(asdict(job.probe), sort_keys=True)),
            ("Search", f"{job.search.rounds} rounds of {job.search.points} points"),
            ("Orthogonal to", ", ".join(job.orthogonalize) or "nothing"),
        ]
        return render_template(
            "cohort.html.j2",
            title=f"StyleProbe cohort {s.cohort_id}: {job.model_set}, target {job.target}",
            target=job.target, summary=summary, not_flipped=done - self.counts["flipped"],
            histogram=_histogram(self.flip_lambdas, job.target),
            most_sensitive=_cases(store, self.most_sensitive()),
            least_sensitive=_cases(store, self.least_sensitive()),
            failures=self.failures, more_failures=self.counts[FAILED] - len(self.failures))


def _push(heap: list[_Ranked], item: _Ranked, size: int) -> None:
    """Keep the ``size`` largest items of ``heap`` (a min-heap)."""
    if len(heap) < size:
        heapq.heappush(heap, item)
    elif item > heap[0]:
        heapq.heapreplace(heap, item)


def _cases(store: ArtifactStore, rows: list[ImageRow]) -> list[Case]:
    """Each row with its (name, bytes) pictures, read from ``store``."""
    return [(row, _case_pictures(store, row)) for row in rows]


def _case_pictures(store: ArtifactStore, row: ImageRow) -> list[tuple[str, bytes]]:
    """(name, PNG) of the input, reconstruction and counterfactual pictures of one case:
    the flip frame, or without a flip the farthest frame on the searched side; drawn from
    the stored arrays for a cohort that renders nothing."""
    if not row.manifest:
        return []
    try:
        outputs = json.loads(store.get(row.manifest))["outputs"]
        if "report" not in outputs:
            side = 0 if row.flip_side == "negative" else len(row.probabilities) - 1
            return list(case_pictures(store, row.job_id, side).items())
    except (ObjectNotFound, KeyError, ValueError):
        return []
    frames = sorted(k for k in outputs if k.startswith("frame_")) or [""]
    farthest = frames[0] if row.flip_side == "negative" else frames[-1]
    counterfactual = outputs.get("flip_frame") or outputs.get(farthest)
    named = [("input", outputs.get("input")), ("reconstruction", outputs.get("reconstruction")),
             ("counterfactual", counterfactual)]
    return [(name, _read(store, key)) for name, key in named if key]


def _read(store: ArtifactStore, key: str) -> bytes:
    """The object under ``key``, or nothing if it is gone."""
    try:
        return store.get(key)
    except ObjectNotFound:
        return b""


def _histogram(values: list[float], target: str) -> bytes:
    """PNG histogram of the flip λ values."""
    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    if values:
        bins = max(5, min(40, int(math.sqrt(len(values))) + 1))
        ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    else:
        ax.text(0.5, 0.5, "no prediction flipped", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(f"flip λ (smallest |λ| that flips P({target}))")
    ax.set_ylabel("images")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
