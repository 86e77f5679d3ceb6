"""The Celery app (Redis broker) and the chain of one explanation.

Settings for long GPU tasks: a task is acknowledged only when it has finished
(``acks_late``) and is given back to the queue if its worker dies
(``reject_on_worker_lost``); each worker process reserves one task at a time (prefetch 1);
the broker redelivers a task nobody acknowledged after ``visibility_timeout_s``, which
must exceed the hard time limit, so a slow task is never run twice while it is alive.
There is no result backend: job state lives in Redis through :mod:`styleprobe.jobs`.

Queues: ``gpu`` (encode, direction, traverse: model calls) and ``cpu`` (render,
manifest), so each kind of worker scales on its own. A cohort
(:mod:`~styleprobe.worker.cohort_tasks`) runs a prepare task and its chunks on ``gpu``
and its summary on ``cpu``.
"""

from __future__ import annotations

from celery import Celery, chain
from celery.canvas import Signature

from styleprobe.config import Settings

GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)
# Stage name -> (task name, queue), in chain order.
STAGES = {
    "encode": ("styleprobe.encode", GPU_QUEUE),
    "direction": ("styleprobe.direction", GPU_QUEUE),
    "traverse": ("styleprobe.traverse", GPU_QUEUE),
    "render": ("styleprobe.render", CPU_QUEUE),
    "manifest": ("styleprobe.manifest", CPU_QUEUE),
}
# A cohort's tasks: name -> (task name, queue).
COHORT_TASKS = {
    "prepare": ("styleprobe.cohort.prepare", GPU_QUEUE),
    "chunk": ("styleprobe.cohort.chunk", GPU_QUEUE),
    "summary": ("styleprobe.cohort.summary", CPU_QUEUE),
}
RESTORE_SWEEPS = 4  # unacknowledged tasks are looked for this often per visibility timeout


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; ValueError if its time limits are inconsistent."""
    if not (0 < settings.task_soft_time_limit_s < settings.task_time_limit_s
            < settings.visibility_timeout_s):
        raise ValueError(
            "need 0 < STYLEPROBE_TASK_SOFT_TIME_LIMIT_S < STYLEPROBE_TASK_TIME_LIMIT_S < "
            f"STYLEPROBE_VISIBILITY_TIMEOUT_S, got {settings.task_soft_time_limit_s}, "
            f"{settings.task_time_limit_s}, {settings.visibility_timeout_s}")
    app = Celery("styleprobe", broker=settings.redis_url,
                 include=["styleprobe.worker.tasks", "styleprobe.worker.cohort_tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": max(1, settings.visibility_timeout_s // RESTORE_SWEEPS),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # A task running when the broker connection drops finishes (tested: a cohort
        # survives a Redis restart); Celery 6 will cancel and redeliver it by default.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_routes={name: {"queue": queue}
                     for name, queue in (*STAGES.values(), *COHORT_TASKS.values())},
        task_default_queue=GPU_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


app = make_app(Settings.from_env())


def explain_chain(job_id: str) -> Signature:
    """The chain of one explanation job; each task gets the keys so far and the job id."""
    names = [name for name, _ in STAGES.values()]
    first, *rest = names
    return chain(app.signature(first, args=({}, job_id), task_id=f"{job_id}-{first}"),
                 *(app.signature(name, args=(job_id,), task_id=f"{job_id}-{name}")
                   for name in rest))


def cohort_start(job_id: str) -> Signature:
    """The first task of a cohort job: it probes the direction and queues the chunks."""
    return app.signature(COHORT_TASKS["prepare"][0], args=(job_id,),
                         task_id=f"{job_id}-prepare")


def cohort_summary(job_id: str) -> Signature:
    """The task that writes a cohort's summary (after its last chunk, or a cancel)."""
    return app.signature(COHORT_TASKS["summary"][0], args=(job_id,))
