"""Celery workers: the explanation stages as tasks on a GPU queue and a CPU queue.

:mod:`~styleprobe.worker.app` configures the one Celery app and builds a job's chain;
:mod:`~styleprobe.worker.tasks` holds the tasks, each a call of one engine stage.
"""
