"""A transient failure is retried; when the broker cannot take the retry, the task's
message is given back (requeued), not dropped as Celery does by default."""

from __future__ import annotations

import pytest
from celery import Celery, Task
from celery.exceptions import Reject

from styleprobe.testing.ports import free_port
from styleprobe.worker.tasks import retry


def test_a_retry_the_broker_cannot_take_gives_the_task_back() -> None:
    app = Celery(broker=f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    app.conf.update(task_publish_retry=False, broker_connection_timeout=1)

    @app.task(bind=True)
    def stage(self: Task) -> None:
        """A task whose retry is asked for."""

    stage.push_request(id="job-encode", retries=0, is_eager=False, called_directly=False)
    try:
        with pytest.raises(Reject) as given_back:
            retry(stage, ConnectionError("Redis went away"))
    finally:
        stage.pop_request()
    assert given_back.value.requeue
