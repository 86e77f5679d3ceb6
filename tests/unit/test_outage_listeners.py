"""Who is told about a dependency outage, with doubles: the worker's JobPauser pauses its
job once when the first call waits and runs it again only when every dependency waited for
answers; the Triton backend and the S3 store tell their listener when a call starts
waiting and when it gets its answer; only unreachable-server errors are waited for
(issue 17)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest
import urllib3
from minio.error import S3Error, ServerError
from tritonclient.utils import InferenceServerException

from styleprobe.backends.base import BackendError
from styleprobe.backends.triton import UNAVAILABLE, ServedModel, TritonBackend
from styleprobe.jobs import JobStore
from styleprobe.modelset import load_model_set
from styleprobe.storage.base import StoreError
from styleprobe.storage.s3 import S3Store, unreachable
from styleprobe.worker.pausing import JobPauser, pause_reason


class Jobs:
    """The two transitions a JobPauser makes, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.state = "running"

    def pause(self, job_id: str, reason: str) -> bool:
        self.calls.append(("pause", job_id, reason))
        self.state = "paused"
        return True

    def unpause(self, job_id: str, message: str) -> bool:
        if self.state != "paused":  # an atomic transition from paused only
            return False
        self.calls.append(("unpause", job_id, message))
        self.state = "running"
        return True

    def get(self, job_id: str) -> Any:
        return type("Record", (), {"state": self.state})()


class Listener:
    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    def waiting(self, dependency: str, budget_s: float) -> None:
        self.heard.append(("waiting", dependency))

    def back(self, dependency: str) -> None:
        self.heard.append(("back", dependency))


def pauser() -> tuple[JobPauser, Jobs]:
    jobs = Jobs()
    return JobPauser(lambda: cast(JobStore, jobs)), jobs


def test_the_job_pauses_once_and_runs_again_when_every_dependency_answers() -> None:
    listener, jobs = pauser()
    with listener.working_on("job-1"):
        threads = [threading.Thread(target=listener.waiting, args=("triton", 120.0))
                   for _ in range(8)]  # the chunks of one batch, all waiting at once
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        listener.waiting("s3", 120.0)
        listener.back("triton")
        assert [c[0] for c in jobs.calls] == ["pause"]  # S3 is still waited for
        listener.back("s3")
    assert [c[0] for c in jobs.calls] == ["pause", "unpause"]
    assert jobs.calls[0][1] == "job-1"
    assert jobs.calls[0][2].startswith("Triton unreachable since ")
    assert jobs.calls[0][2].endswith(" UTC (waited for up to 120 s)")
    assert jobs.calls[1][2] == "running again: S3 answers"


def test_a_retried_task_that_did_its_work_ends_the_earlier_attempts_pause() -> None:
    listener, jobs = pauser()
    with pytest.raises(TimeoutError), listener.working_on("job-3"):
        listener.waiting("s3", 120.0)
        raise TimeoutError("S3 did not answer within its budget")  # the task is retried
    assert jobs.state == "paused"  # still waiting, for the retry
    with listener.working_on("job-3"):  # the retry: S3 answers at once
        pass
    assert jobs.state == "running"
    assert jobs.calls[-1] == ("unpause", "job-3", "running again: its work goes on")
    with pytest.raises(TimeoutError), listener.working_on("job-3"):
        listener.waiting("s3", 120.0)
        raise TimeoutError("S3 down again")
    assert jobs.state == "paused"  # a failed attempt does not end the pause


def test_outside_a_job_nothing_is_marked() -> None:
    listener, jobs = pauser()
    listener.waiting("s3", 120.0)
    listener.back("s3")
    with listener.working_on("job-2"):
        listener.back("s3")  # a wait that began before this job: not its pause
    assert jobs.calls == []


def test_the_reason_names_the_dependency_and_the_time() -> None:
    assert pause_reason("s3", 120.0, since=0.0) == (
        "S3 unreachable since 00:00:00 UTC (waited for up to 120 s)")


def test_the_triton_backend_tells_its_listener(tiny_repository: Path) -> None:
    backend = TritonBackend(load_model_set(tiny_repository, "tiny"), "127.0.0.1:1",
                            backoff_s=0.001, retry_s=10)
    backend.listener = listener = Listener()
    served = ServedModel("tiny-mapping", "1", [], [])
    answers = iter([InferenceServerException("down", status=UNAVAILABLE)] * 3 + ["w"])

    def request() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert backend._call(served, request) == "w"
    assert listener.heard == [("waiting", "triton"), ("back", "triton")]
    assert backend._call(served, lambda: "again") == "again"
    assert len(listener.heard) == 2  # a call that did not wait tells nothing


def test_a_server_that_answers_with_an_error_after_a_wait_is_back() -> None:
    """A wait that ends in an answer, even a refusal (the object is missing, the model
    rejects the request), ends the outage: the job must not stay paused."""
    store = S3Store("127.0.0.1:1", "key", "secret", "bucket", check=False)
    store.wait_out_outages(10.0, listener := Listener())
    answers: list[Exception] = [urllib3.exceptions.ProtocolError("reset"),
                                S3Error(cast(Any, None), "NoSuchKey", "m", "r", "h", "i")]

    def missing() -> str:
        raise answers.pop(0)

    with pytest.raises(StoreError):
        store._call("stat", "jobs/a/x.json", missing)
    assert listener.heard == [("waiting", "s3"), ("back", "s3")]


def test_the_triton_backend_is_back_when_it_answers_with_an_error(
        tiny_repository: Path) -> None:
    backend = TritonBackend(load_model_set(tiny_repository, "tiny"), "127.0.0.1:1",
                            backoff_s=0.001, retry_s=10)
    backend.listener = listener = Listener()
    answers = iter([InferenceServerException("down", status=UNAVAILABLE),
                    InferenceServerException("bad shape", status="StatusCode.INVALID_ARGUMENT")])

    def request() -> str:
        raise next(answers)

    with pytest.raises(BackendError, match="rejected"):
        backend._call(ServedModel("tiny-mapping", "1", [], []), request)
    assert listener.heard == [("waiting", "triton"), ("back", "triton")]


def test_the_s3_store_tells_its_listener_and_waits_only_for_an_unreachable_server() -> None:
    store = S3Store("127.0.0.1:1", "key", "secret", "bucket", check=False)
    store.wait_out_outages(10.0, listener := Listener())
    failures: list[Exception] = [urllib3.exceptions.ProtocolError("reset"),
                                 ServerError("503", 503)]

    def flaky() -> str:
        if failures:
            raise failures.pop(0)
        return "object"

    assert store._call("get", "jobs/a/x.json", flaky) == "object"
    assert listener.heard == [("waiting", "s3"), ("back", "s3")]

    def denied() -> str:
        raise S3Error(cast(Any, None), "AccessDenied", "no", "r", "h", "i")

    with pytest.raises(StoreError, match="AccessDenied"):
        store._call("get", "jobs/a/x.json", denied)
    assert len(listener.heard) == 2  # an answer about the request is not waited for
    assert unreachable(S3Error(cast(Any, None), "ServiceUnavailable", "m", "r", "h", "i"))
    assert not unreachable(S3Error(cast(Any, None), "NoSuchKey", "m", "r", "h", "i"))
