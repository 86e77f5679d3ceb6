"""A resumed cohort's chunk tasks carry its run: a task queued by an earlier run (before a
cancel or failure) is skipped, one of the current run goes on while the cohort runs or is
paused (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest
from celery.exceptions import Ignore

from styleprobe.worker import cohort_tasks


class Jobs:
    def __init__(self, state: str, run: int) -> None:
        self.record = type("Record", (), {"state": state, "run": run})()

    def get(self, job_id: str) -> Any:
        return self.record


@pytest.mark.parametrize(("state", "job_run", "task_run", "goes_on"), [
    ("running", 0, 0, True),
    ("paused", 0, 0, True),  # another worker waits for S3: the chunk goes on
    ("running", 1, 0, False),  # a chunk left from before the resume
    ("running", 1, 1, True),
    ("queued", 1, 1, False),  # resumed, its prepare not started yet
    ("cancelled", 0, 0, False),
])
def test_a_chunk_goes_on_only_in_its_own_working_run(monkeypatch: pytest.MonkeyPatch,
                                                     state: str, job_run: int,
                                                     task_run: int, goes_on: bool) -> None:
    process = type("Process", (), {"jobs": Jobs(state, job_run)})()
    monkeypatch.setattr(cohort_tasks, "worker_process", lambda: process)
    if goes_on:
        cohort_tasks._running("job", 3, task_run)
    else:
        with pytest.raises(Ignore):
            cohort_tasks._running("job", 3, task_run)


def test_chunk_task_ids_of_a_resumed_run_differ() -> None:
    assert cohort_tasks._task_id("job", "chunk", 2, 0) == "job-chunk-2"
    assert cohort_tasks._task_id("job", "chunk", 2, 1) == "job-chunk-2-run1"
