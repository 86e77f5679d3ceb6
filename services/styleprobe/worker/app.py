"""The Celery app (Redis broker), the task names and queues, and the chain of one job.

Settings for long GPU tasks: a task is acknowledged only when it has finished
(``acks_late``) and is given back to the queue if its worker dies
(``reject_on_worker_lost``); each worker process reserves one task at a time (prefetch 1);
the broker redelivers a task nobody acknowledged after ``visibility_timeout_s``, which
must exceed the hard time limit, so a slow task is never run twice while it is alive.
There is no result backend: job state lives in Redis through :mod:`styleprobe.jobs`.
A ``rediss://`` broker is reached over TLS that verifies Redis's certificate (against
``STYLEPROBE_TLS_CA_BUNDLE`` or the system's roots, :func:`styleprobe.tls.redis_ssl`).

Queues: ``gpu`` for the stages that call models, ``cpu`` for the rest (rendering and the
manifest), so each kind of worker scales on its own. Within the queues, a job's later
stages come before new jobs' first ones (:func:`priority_of`: Redis priorities, 0 served
first across both queues), so jobs finish roughly in the order they came instead of all
advancing one stage at a time; cohorts' chunks come after explanations. Each priority is
its own Redis list, ``<queue>`` for 0 and ``<queue>:<n>`` for n = 1..9 (what a queue-depth
autoscaler sums). An explain job is a chain of one task per stage of
:data:`styleprobe.explain.engine.STAGES`, named ``styleprobe.<stage>``. A cohort
(:mod:`~styleprobe.worker.cohort_tasks`) runs a prepare task and its chunks' model stages
on ``gpu``, and its chunks' outputs and its summary on ``cpu``.

Nothing is built at import: the orchestrator and ``styleprobe serve worker`` each make
their app from their settings (:func:`make_app`); the tasks are Celery shared tasks,
bound to whichever app runs them.
"""

from __future__ import annotations

from celery import Celery, chain
from celery.canvas import Signature

from styleprobe.config import Settings
from styleprobe.explain.engine import STAGES, Stage
from styleprobe.tls import redis_ssl

GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"
QUEUES = (GPU_QUEUE, CPU_QUEUE)
# A cohort's tasks: name -> (task name, queue).
COHORT_TASKS = {
    "prepare": ("styleprobe.cohort.prepare", GPU_QUEUE),
    "chunk": ("styleprobe.cohort.chunk", GPU_QUEUE),
    "outputs": ("styleprobe.cohort.outputs", CPU_QUEUE),
    "summary": ("styleprobe.cohort.summary", CPU_QUEUE),
}
RESTORE_SWEEPS = 4  # unacknowledged tasks are looked for this often per visibility timeout
# the tasks, and the workers' liveness beats (styleprobe.worker.liveness: signal handlers)
TASK_MODULES = ["styleprobe.worker.tasks", "styleprobe.worker.cohort_tasks",
                "styleprobe.worker.liveness"]


def task_name(stage: Stage) -> str:
    """The Celery task of a stage: ``styleprobe.<stage name>``."""
    return f"styleprobe.{stage.name}"


def queue_of(stage: Stage) -> str:
    """The queue of a stage: ``gpu`` if it calls models, else ``cpu``."""
    return GPU_QUEUE if stage.uses_models else CPU_QUEUE


def priority_of(stage: Stage) -> int:
    """A stage's message priority on Redis (0 is served first): the later the stage, the
    sooner, so a job under way finishes before new jobs start."""
    return len(STAGES) - 1 - STAGES.index(stage)


# A cohort's tasks after every explanation stage (bulk work yields to interactive calls);
# its summary, which ends a job, first.
COHORT_PRIORITIES = {"prepare": 9, "chunk": 9, "outputs": 8, "summary": 0}
PRIORITY_STEPS = list(range(10))
PRIORITY_SEPARATOR = ":"  # the list of priority n of queue q is "q:n" (kombu's default: \x06\x16)


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting tasks, one per priority."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}"
            for step in PRIORITY_STEPS]


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``; ValueError if its time limits are inconsistent."""
    if not (0 < settings.task_soft_time_limit_s < settings.task_time_limit_s
            < settings.visibility_timeout_s):
        raise ValueError(
            "need 0 < STYLEPROBE_TASK_SOFT_TIME_LIMIT_S < STYLEPROBE_TASK_TIME_LIMIT_S < "
            f"STYLEPROBE_VISIBILITY_TIMEOUT_S, got {settings.task_soft_time_limit_s}, "
            f"{settings.task_time_limit_s}, {settings.visibility_timeout_s}")
    app = Celery("styleprobe", broker=settings.redis_url, include=TASK_MODULES,
                 set_as_current=False)
    routes = {task_name(stage): {"queue": queue_of(stage), "priority": priority_of(stage)}
              for stage in STAGES}
    routes.update({name: {"queue": queue, "priority": COHORT_PRIORITIES[short]}
                   for short, (name, queue) in COHORT_TASKS.items()})
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
            "priority_steps": PRIORITY_STEPS,  # one Redis list per priority, 0 served first
            "sep": PRIORITY_SEPARATOR,
        },
        task_default_priority=len(STAGES),  # any other task: after a job's stages
        broker_connection_retry_on_startup=True,
        # A task running when the broker connection drops finishes (tested: a cohort
        # survives a Redis restart); Celery 6 will cancel and redeliver it by default.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_routes=routes,
        task_default_queue=GPU_QUEUE,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    tls = redis_ssl(settings)
    if tls:  # kombu's own default for rediss:// does not verify the certificate
        app.conf.broker_use_ssl = tls
    return app


def explain_chain(app: Celery, job_id: str) -> Signature:
    """The chain of one explanation job, a task per stage of :data:`STAGES` in order; each
    task gets the job's keys so far and the job id."""
    (first, first_priority), *rest = ((task_name(stage), priority_of(stage))
                                      for stage in STAGES)
    # each signature carries its priority: a chain's next task is sent by the worker that
    # ran the one before, from these options
    return chain(app.signature(first, args=({}, job_id), task_id=f"{job_id}-{first}",
                               priority=first_priority),
                 *(app.signature(name, args=(job_id,), task_id=f"{job_id}-{name}",
                                 priority=priority)
                   for name, priority in rest))


def cohort_task(app: Celery, name: str, *args: object, task_id: str | None = None
                ) -> Signature:
    """A cohort task (:data:`COHORT_TASKS`) with its arguments."""
    return app.signature(COHORT_TASKS[name][0], args=args, task_id=task_id,
                         priority=COHORT_PRIORITIES[name])
