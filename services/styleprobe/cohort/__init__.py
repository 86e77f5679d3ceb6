"""Cohort jobs: many images explained with one model set, target, λ grid and direction.

The machinery here does not depend on how the images are run: the embedded mode
(:mod:`.runner`, ``styleprobe cohort run``) and the service's chunk tasks use the same
pieces. A cohort's keys in the artifact store:

- ``cohorts/<id>/cohort.json``: its settings (:class:`~.ledger.CohortSpec`), written first;
- ``cohorts/<id>/done/<image hash>.json``: one row per finished image (done or failed),
  written after the image's own job (``jobs/<cohort id>-<image hash>/``, as a single-image
  job) is complete. A restarted cohort skips images with a row and redoes the others
  under the same job id, so nothing is done twice and no row is duplicated;
- ``cohorts/<id>/summary.csv``, ``summary.parquet`` and ``report.html``: the summary,
  written at the end from the rows, one image at a time (:mod:`.summary`, :mod:`.report`).
"""
