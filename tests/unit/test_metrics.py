"""The metrics module: the helpers record what they say, the endpoint serves exactly the
series that docs/metrics.md documents, and label values are checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from styleprobe import metrics
from styleprobe.config import REPO_ROOT
from styleprobe.testing.ports import free_port


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def documented_series() -> dict[str, str]:
    """``series -> type`` from the StyleProbe table of docs/metrics.md."""
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    return dict(re.findall(r"^\| `(styleprobe_\w+)` \| (\w+) \|", text, re.MULTILINE))


def test_helpers_record_what_they_say() -> None:
    before = sample("styleprobe_stage_duration_seconds_count", stage="render")
    with pytest.raises(RuntimeError), metrics.stage_timer("render"):
        raise RuntimeError("a failed stage is timed too")
    assert sample("styleprobe_stage_duration_seconds_count", stage="render") == before + 1

    images = sample("styleprobe_images_generated_total")
    up_to = {le: sample("styleprobe_backend_call_batch_size_bucket", model="decode", le=le)
             for le in ("16.0", "32.0")}  # other tests in this process record calls too
    metrics.observe_backend_call("decode", 17, 0.02)
    metrics.observe_backend_call("encoder", 1, 0.01)
    assert sample("styleprobe_images_generated_total") == images + 17  # encoder: no image
    assert sample("styleprobe_backend_call_batch_size_bucket", model="decode",
                  le="16.0") == up_to["16.0"]
    assert sample("styleprobe_backend_call_batch_size_bucket", model="decode",
                  le="32.0") == up_to["32.0"] + 1

    metrics.count_job("cohort", "failed")
    metrics.count_cohort_image("skipped")
    metrics.set_queue_depth("gpu", 7)
    metrics.set_dependency_ready("triton", False)
    assert sample("styleprobe_jobs_total", kind="cohort", state="failed") >= 1
    assert sample("styleprobe_cohort_images_total", outcome="skipped") >= 1
    assert sample("styleprobe_queue_depth", queue="gpu") == 7
    assert sample("styleprobe_dependency_ready", dependency="triton") == 0


@pytest.mark.parametrize("call", [
    lambda: metrics.stage_timer("decode").__enter__(),
    lambda: metrics.observe_backend_call("vae", 1, 0.1),
    lambda: metrics.count_job("explain", "lost"),
    lambda: metrics.count_cohort_image("maybe"),
    lambda: metrics.set_dependency_ready("postgres", True),
])
def test_unknown_label_values_are_refused(call: object) -> None:
    with pytest.raises(ValueError, match="unknown"):
        call()


def test_endpoint_serves_exactly_the_documented_series() -> None:
    documented = documented_series()
    assert len(documented) == 14
    port = free_port()
    metrics.start_metrics_server(port, "127.0.0.1")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        page = response.read().decode()
    served = dict(re.findall(r"^# TYPE (styleprobe_\w+) (\w+)$", page, re.MULTILINE))
    assert served == documented


def test_a_worker_start_removes_only_files_of_processes_gone(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    for name in (f"counter_{gone}.db", f"histogram_{gone}.db", f"counter_{os.getpid()}.db"):
        (tmp_path / name).write_bytes(b"")
    assert metrics.remove_stale_files(tmp_path) == 2
    assert [p.name for p in tmp_path.iterdir()] == [f"counter_{os.getpid()}.db"]


def test_worker_metrics_without_multiprocess_mode_fail_at_start(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    with pytest.raises(ValueError, match="PROMETHEUS_MULTIPROC_DIR"):
        metrics.connect_celery_worker(9465)
    metrics.connect_celery_worker(0)  # no port: nothing to serve, nothing to check


def test_the_command_line_leaves_prometheus_client_unimported() -> None:
    """``styleprobe serve worker`` sets PROMETHEUS_MULTIPROC_DIR before prometheus-client
    reads it: importing the command line must not import it already."""
    code = "import sys, styleprobe.cli; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_a_service_start_prepares_its_metrics_folder(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``styleprobe serve`` makes the multiprocess folder before any metric exists (importing
    styleprobe.metrics makes nothing); a worker that serves its pool's metrics empties it."""
    from styleprobe.cli.serve import prepare_metrics_folder

    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    prepare_metrics_folder(fresh=False)  # unset: nothing to make
    assert metrics.MULTIPROC_ENV not in os.environ
    folder = tmp_path / "samples"
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(folder))
    prepare_metrics_folder(fresh=False)
    (folder / "counter_1.db").write_bytes(b"")  # left by an earlier run (pid reused)
    prepare_metrics_folder(fresh=False)
    assert [p.name for p in folder.iterdir()] == ["counter_1.db"]
    prepare_metrics_folder(fresh=True)
    assert list(folder.iterdir()) == []
    monkeypatch.delenv(metrics.MULTIPROC_ENV)
    prepare_metrics_folder(fresh=True)  # unset: a new folder of its own
    new = Path(os.environ[metrics.MULTIPROC_ENV])
    assert new.is_dir() and new != folder
    new.rmdir()
