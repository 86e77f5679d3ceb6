"""Every Prometheus metric of StyleProbe, defined once, and how a process exposes them.

The series, their labels and who records them are listed in ``docs/metrics.md``. Label
values are checked against fixed sets (:data:`STAGES`, :data:`MODELS`, ...), so a caller's
typo cannot create an unbounded number of series.

Exposition. The orchestrator is one process: :func:`start_metrics_server` serves the
default registry. A Celery worker is a parent with forked children (prefork pool), each
of which records its own samples: it runs in prometheus-client's *multiprocess mode* —
``PROMETHEUS_MULTIPROC_DIR`` names a folder of the worker's own that exists before this
module is imported (``styleprobe serve worker`` sets, makes and empties it),
every process writes its samples to files there, and the parent serves all of them
summed on one port (:func:`connect_celery_worker`). One port per worker host, whatever the pool
size, so the scrape configuration does not change when the concurrency does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# No ``*_created`` series: Prometheus does not need them, and they double every counter.
disable_created_metrics()

# Allowed label values.
# the input stored when a job is submitted, then the engine's stages (explain.engine.STAGES)
STAGES = ("input", "encode", "direction", "traverse", "attributes", "render", "manifest")
MODELS = ("mapping", "synthesis", "encoder", "classifier", "decode", "styles", "stylesynthesis")
# calls whose every batch item is a generated image
GENERATOR_MODELS = ("synthesis", "decode", "stylesynthesis")
JOB_KINDS = ("explain", "cohort")
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
COHORT_OUTCOMES = ("done", "failed", "skipped")
DEPENDENCIES = ("redis", "s3", "triton")
REAP_REASONS = ("expired", "partial")
ROUND_OUTCOMES = ("ok", "failed")
# what the DICOM gateway did with an instance (styleprobe.gateway.server)
GATEWAY_OUTCOMES = ("received", "unrouted", "sent", "not_explained", "not_sent")

SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
MODEL_CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

RPCS = Counter("styleprobe_grpc_requests_total", "gRPC calls handled, by method and code",
               ["method", "code"])
RPC_SECONDS = Histogram("styleprobe_grpc_request_duration_seconds",
                        "Time to handle a gRPC call (a stream: until it ends), by method",
                        ["method"], buckets=SECONDS_BUCKETS)
JOBS = Counter("styleprobe_jobs_total", "Jobs that entered each state, by job kind",
               ["kind", "state"])
STAGE_SECONDS = Histogram("styleprobe_stage_duration_seconds",
                          "Time spent in one stage of one explanation, by stage",
                          ["stage"], buckets=SECONDS_BUCKETS)
BACKEND_SECONDS = Histogram("styleprobe_backend_call_duration_seconds",
                            "Latency of one model-backend call (Triton or local), by model",
                            ["model"], buckets=MODEL_CALL_BUCKETS)
BACKEND_BATCH = Histogram("styleprobe_backend_call_batch_size",
                          "Items sent in one model-backend call, by model",
                          ["model"], buckets=BATCH_BUCKETS)
IMAGES_GENERATED = Counter("styleprobe_images_generated_total",
                           "Images decoded by the generator (synthesis or the decode ensemble)")
QUEUE_DEPTH = Gauge("styleprobe_queue_depth", "Tasks waiting in a Celery queue", ["queue"],
                    multiprocess_mode="livemax")
COHORT_IMAGES = Counter("styleprobe_cohort_images_total",
                        "Cohort images finished, by outcome (done, failed; skipped: found "
                        "finished by a resumed run)", ["outcome"])
DEPENDENCY_READY = Gauge("styleprobe_dependency_ready",
                         "1 when the orchestrator's last health check reached the dependency",
                         ["dependency"], multiprocess_mode="livemax")
REAPED = Counter("styleprobe_reaper_objects_removed_total",
                 "Objects the retention reaper removed, by reason (expired: past the retention "
                 "period; partial: a job folder nothing will finish)", ["reason"])
GATEWAY_INSTANCES = Counter("styleprobe_gateway_instances_total",
                            "DICOM instances the gateway received, and what became of each",
                            ["outcome"])
GATEWAY_SECONDS = Histogram("styleprobe_gateway_instance_duration_seconds",
                            "Seconds from an instance's series handed on to its results sent",
                            buckets=SECONDS_BUCKETS)
REAPER_ROUNDS = Counter("styleprobe_reaper_rounds_total",
                        "Rounds of the retention reaper this process ran, by outcome",
                        ["outcome"])


# Every job series exists from the start, at 0: ratios over them (the failure rate of the
# dashboard and the alert) have data before the first job fails.
for _kind in JOB_KINDS:
    for _state in JOB_STATES:
        JOBS.labels(_kind, _state)
# and so do the reaper's: a retention that never ran successfully is visible as such
for _reason in REAP_REASONS:
    REAPED.labels(_reason)
for _outcome in ROUND_OUTCOMES:
    REAPER_ROUNDS.labels(_outcome)
for _outcome in GATEWAY_OUTCOMES:
    GATEWAY_INSTANCES.labels(_outcome)


def _checked(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; one of: {', '.join(allowed)}")
    return value


# --- recording ----------------------------------------------------------------------------

def observe_rpc(method: str, code: str, seconds: float) -> None:
    """Record one gRPC call of ``method`` (full name) that ended with status ``code``."""
    RPCS.labels(method, code).inc()
    RPC_SECONDS.labels(method).observe(seconds)


@contextmanager
def stage_timer(stage: str) -> Iterator[None]:
    """Time the ``with`` block as one run of ``stage`` (observed whether it raises or not)."""
    histogram = STAGE_SECONDS.labels(_checked(stage, STAGES, "stage"))
    started = time.perf_counter()
    try:
        yield
    finally:
        histogram.observe(time.perf_counter() - started)


def observe_backend_call(model: str, batch: int, seconds: float) -> None:
    """Record one model call of ``batch`` items that took ``seconds``; calls of the
    generator also count their images in ``styleprobe_images_generated_total``."""
    _checked(model, MODELS, "model")
    BACKEND_SECONDS.labels(model).observe(seconds)
    BACKEND_BATCH.labels(model).observe(batch)
    if model in GENERATOR_MODELS:
        IMAGES_GENERATED.inc(batch)


def count_job(kind: str, state: str) -> None:
    """Count a job entering ``state`` (call once per applied transition)."""
    JOBS.labels(_checked(kind, JOB_KINDS, "job kind"), _checked(state, JOB_STATES, "state")).inc()


def count_reaped(reason: str, objects: int) -> None:
    """Count ``objects`` removed by the retention reaper for ``reason``."""
    REAPED.labels(_checked(reason, REAP_REASONS, "reason")).inc(objects)


def count_reaper_round(outcome: str) -> None:
    """Count one round of the retention reaper that ended ``ok`` or ``failed``."""
    REAPER_ROUNDS.labels(_checked(outcome, ROUND_OUTCOMES, "outcome")).inc()


def count_gateway_instance(outcome: str, seconds: float | None = None) -> None:
    """Count a gateway instance's ``outcome``; ``seconds``: its time until results sent."""
    GATEWAY_INSTANCES.labels(_checked(outcome, GATEWAY_OUTCOMES, "outcome")).inc()
    if seconds is not None:
        GATEWAY_SECONDS.observe(seconds)


def count_cohort_image(outcome: str) -> None:
    """Count one cohort image finished with ``outcome`` (done, failed or skipped)."""
    COHORT_IMAGES.labels(_checked(outcome, COHORT_OUTCOMES, "outcome")).inc()


def set_queue_depth(queue: str, depth: int) -> None:
    """Record how many tasks wait in ``queue`` (e.g. Redis ``LLEN`` of the queue's list)."""
    QUEUE_DEPTH.labels(queue).set(depth)


def set_dependency_ready(dependency: str, ready: bool) -> None:
    """Record the result of the latest health check of ``dependency``."""
    DEPENDENCY_READY.labels(_checked(dependency, DEPENDENCIES, "dependency")).set(int(ready))


# --- exposition ---------------------------------------------------------------------------

def multiprocess_dir() -> Path | None:
    """The multiprocess folder named by ``PROMETHEUS_MULTIPROC_DIR``, if any."""
    raw = os.environ.get(MULTIPROC_ENV)
    return Path(raw) if raw else None


def start_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` on ``host:port`` from a background thread.

    In multiprocess mode the page sums the samples of every process that writes to the
    folder; otherwise it is this process's registry.
    """
    folder = multiprocess_dir()
    registry: Any = REGISTRY
    if folder is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=str(folder))
    start_http_server(port, addr=host, registry=registry)
    log.info("metrics server started", extra={"port": port, "multiprocess": folder is not None})


def remove_stale_files(folder: Path) -> int:
    """Delete the sample files of processes that no longer run (a previous worker run);
    how many. Files are named ``<kind>_<pid>.db`` by prometheus-client."""
    removed = 0
    for path in folder.glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _require_multiprocess_dir() -> Path:
    folder = multiprocess_dir()
    if folder is None:
        raise ValueError(f"worker metrics need {MULTIPROC_ENV} to name a writable folder of "
                         "the worker's own, set in its environment before it starts")
    return folder


def start_worker_metrics_server(port: int, host: str = "0.0.0.0") -> None:
    """In the parent of a prefork worker pool, before it forks: clear what a previous run
    left and serve every process's samples. ValueError without multiprocess mode."""
    folder = _require_multiprocess_dir()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_files(folder)
    start_metrics_server(port, host)


def child_exited(pid: int) -> None:
    """Drop the live gauges of a pool child that exited (its counters stay counted)."""
    folder = multiprocess_dir()
    if folder is not None:
        multiprocess.mark_process_dead(pid, path=str(folder))


def connect_celery_worker(port: int, host: str = "0.0.0.0") -> None:
    """Wire a Celery worker: the parent serves metrics on ``port`` when it starts (0: no
    server), and each pool child marks itself dead when it exits. Call at import of the
    Celery app module; ValueError if ``PROMETHEUS_MULTIPROC_DIR`` is not set."""
    if not port:
        return
    _require_multiprocess_dir()  # fail at start, not silently inside a signal handler
    from celery.signals import worker_init, worker_process_shutdown

    def on_worker_init(**_: Any) -> None:
        start_worker_metrics_server(port, host)

    def on_child_shutdown(pid: int | None = None, **_: Any) -> None:
        child_exited(pid or os.getpid())

    worker_init.connect(on_worker_init, weak=False)
    worker_process_shutdown.connect(on_child_shutdown, weak=False)
