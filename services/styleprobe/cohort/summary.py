"""The cohort summary: ``summary.csv``, ``summary.parquet`` and ``report.html``.

One pass over the rows, in the order of the cohort's images, one row at a time: each row
goes to the CSV writer, to a Parquet row group in the making (at most
:data:`ROW_GROUP` rows held), and to the report's counters. The files are built in a
temporary folder and stored at the end, so a reader sees whole files or none.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from styleprobe.cohort.ledger import CohortLedger, cohort_key
from styleprobe.cohort.report import CohortReport
from styleprobe.cohort.rows import DONE, FAILED, PENDING, ImageRow, table_columns, table_record

ROW_GROUP = 1000  # rows per Parquet row group


@dataclass
class CohortSummary:
    """Counts of a finished summary and the keys of its files."""

    total: int
    done: int
    failed: int
    pending: int
    unreliable: int
    flipped: int
    outputs: dict[str, str] = field(default_factory=dict)


def table_schema(lambdas: list[float], attributes: int = 0) -> pa.Schema:
    """The Parquet schema of the summary table (every column nullable)."""
    kinds = {name: str(f.type) for name, f in ImageRow.__dataclass_fields__.items()}
    columns = []
    for name in table_columns(lambdas, attributes):
        kind = kinds.get(name, "float")
        arrow = pa.bool_() if "bool" in kind else pa.float64() if "float" in kind else pa.string()
        columns.append(pa.field(name, arrow))
    return pa.schema(columns)


def write_summary(ledger: CohortLedger, images: Iterable[str]) -> CohortSummary:
    """Write the summary of ``images`` (the cohort's inputs, in order) from their rows."""
    spec = ledger.spec()
    lambdas = [float(v) for v in spec.job.lambdas.values()]
    attributes = spec.job.attributes.top if spec.job.attributes else 0
    columns = table_columns(lambdas, attributes)
    schema = table_schema(lambdas, attributes)
    report = CohortReport(spec)
    with tempfile.TemporaryDirectory(prefix="styleprobe-cohort-") as tmp:
        csv_path, parquet_path = Path(tmp) / "summary.csv", Path(tmp) / "summary.parquet"
        with (csv_path.open("w", newline="") as fh,
              pq.ParquetWriter(parquet_path, schema) as parquet):
            table = csv.DictWriter(fh, fieldnames=columns)
            table.writeheader()
            group: list[dict[str, Any]] = []
            for row in ledger.rows(images):
                record = table_record(row, lambdas, attributes)
                table.writerow(record)
                group.append(record)
                report.add(row)
                if len(group) == ROW_GROUP:
                    parquet.write_table(pa.Table.from_pylist(group, schema=schema))
                    group = []
            if group or report.total == 0:
                parquet.write_table(pa.Table.from_pylist(group, schema=schema))
        outputs = {"csv": cohort_key(spec.cohort_id, "summary.csv"),
                   "parquet": cohort_key(spec.cohort_id, "summary.parquet"),
                   "report": cohort_key(spec.cohort_id, "report.html")}
        ledger.store.put(outputs["csv"], csv_path.read_bytes(), "text/csv")
        ledger.store.put(outputs["parquet"], parquet_path.read_bytes(),
                         "application/vnd.apache.parquet")
    ledger.store.put(outputs["report"], report.html(ledger.store).encode(), "text/html")
    return CohortSummary(total=report.total, done=report.counts[DONE],
                         failed=report.counts[FAILED], pending=report.counts[PENDING],
                         unreliable=report.counts["unreliable"],
                         flipped=report.counts["flipped"], outputs=outputs)
