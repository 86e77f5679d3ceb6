"""The inline runner and the Celery chain take their stages from one list, one name each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from styleprobe import metrics
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.explain import engine
from styleprobe.explain.engine import STAGE_NAMES, STAGES, Explainer
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.storage.local import LocalStore
from styleprobe.worker import tasks
from styleprobe.worker.app import explain_chain, make_app, queue_of, task_name


def test_the_celery_chain_walks_the_engine_stage_list() -> None:
    app = make_app(Settings())
    chain = explain_chain(app, "job1")
    assert [task.task for task in chain.tasks] == [f"styleprobe.{name}" for name in STAGE_NAMES]
    assert [task.id for task in chain.tasks] == [f"job1-styleprobe.{n}" for n in STAGE_NAMES]
    assert list(tasks.STAGE_TASKS) == list(STAGE_NAMES)
    for stage in STAGES:
        assert tasks.STAGE_TASKS[stage.name].name == task_name(stage)
        assert app.conf.task_routes[task_name(stage)]["queue"] == queue_of(stage)


def test_the_inline_runner_walks_the_same_list(tiny_repository: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []
    backend = LocalBackend(tiny_repository, "tiny")

    def recording(stage: engine.Stage, context: engine.StageContext,
                  keys: engine.JobKeys) -> engine.JobKeys:
        ran.append(stage.name)
        return stage.run(context, keys)

    monkeypatch.setattr(engine, "run_stage", recording)
    Explainer(backend, LocalStore(tmp_path)).explain(
        np.zeros((16, 16, 1), np.float32),
        JobSpec.create(backend.model_set, probe=ProbeSettings(samples=200)))
    assert ran == list(STAGE_NAMES)


def test_model_stages_run_on_gpu_first_and_every_stage_is_a_metric_label() -> None:
    assert [queue_of(stage) for stage in STAGES] == ["gpu", "gpu", "gpu", "gpu", "cpu", "cpu"]
    assert engine.MODEL_STAGES + engine.OUTPUT_STAGES == STAGES
    assert ("input", *STAGE_NAMES) == metrics.STAGES
