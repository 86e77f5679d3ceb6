"""The whole service on real servers, started once for the e2e tests and stopped by pid.

Redis (a fresh ``redis-server``), S3 (``weed server -s3``), a CPU ``tritonserver`` serving
the tiny model set (and the bundled ``knee-oa`` set when it has been exported), the
orchestrator and two Celery workers on both queues.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

import required
from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.modelset import list_model_sets, load_model_set, manifest_path
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.stack import ServiceStack

BUNDLED_SET = "knee-oa"
# Seconds: a stage is stopped after SOFT, killed after HARD; a task nobody acknowledged
# is handed out again after VISIBILITY (generous: the test machines are shared).
SOFT, HARD, VISIBILITY = 240, 250, 260


@pytest.fixture(scope="session")
def service_repository(tiny_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set, plus the bundled knee-oa set if model_repository/ has it (linked)."""
    repository = tmp_path_factory.mktemp("service") / "model_repository"
    shutil.copytree(tiny_repository, repository)
    if BUNDLED_SET in list_model_sets(DEFAULT_MODEL_REPOSITORY):
        model_set = load_model_set(DEFAULT_MODEL_REPOSITORY, BUNDLED_SET)
        shutil.copy(manifest_path(DEFAULT_MODEL_REPOSITORY, BUNDLED_SET), repository)
        for entry in model_set.models.values():
            (repository / entry.triton_name).symlink_to(
                DEFAULT_MODEL_REPOSITORY / entry.triton_name)
    return repository


@pytest.fixture(scope="session")
def explained_model_set(service_repository: Path) -> str:
    """The set the pipeline comparison uses: knee-oa when bundled (real models), else tiny."""
    return BUNDLED_SET if BUNDLED_SET in list_model_sets(service_repository) else "tiny"


@pytest.fixture(scope="session")
def triton(service_repository: Path, cpu_triton: Callable[..., TritonProcess]) -> TritonProcess:
    return cpu_triton(service_repository)


StackFactory = Callable[..., ServiceStack]


@pytest.fixture(scope="session")
def make_stack(service_repository: Path, triton: TritonProcess,
               tmp_path_factory: pytest.TempPathFactory) -> StackFactory:
    """``make_stack(name, limits=(soft, hard, visibility), **options)``: a service stack
    (to enter) on the test Triton, two workers, these task time limits in seconds and a
    small probe; ``options`` go to :class:`ServiceStack`."""
    for program in ("redis-server", "weed", "styleprobe"):
        required.program(program)

    def make(name: str, limits: tuple[int, int, int] = (SOFT, HARD, VISIBILITY),
             **options: bool) -> ServiceStack:
        soft, hard, visibility = limits
        return ServiceStack(
            tmp_path_factory.mktemp(name), service_repository, workers=2, backend="triton",
            triton_url=triton.grpc_url, **options,
            extra_env={"STYLEPROBE_TASK_SOFT_TIME_LIMIT_S": str(soft),
                       "STYLEPROBE_TASK_TIME_LIMIT_S": str(hard),
                       "STYLEPROBE_VISIBILITY_TIMEOUT_S": str(visibility),
                       "STYLEPROBE_PROBE_SAMPLES": "400"})
    return make


@pytest.fixture(scope="session")
def stack(make_stack: StackFactory) -> Iterator[ServiceStack]:
    with make_stack("stack") as services:
        yield services


@pytest.fixture(scope="session")
def channel(stack: ServiceStack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.grpc_address) as chan:
        yield chan
