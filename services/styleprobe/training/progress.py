"""Progress of the training phases: a tqdm bar on a terminal, and plain lines (one every
few seconds, and one at the end) where stderr is a log file, without carriage returns."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

PLAIN_EVERY_S = 10.0  # seconds between the plain lines of a log file


class Progress:
    """Counts the steps of one phase (``desc``) out of ``total``; use as a context."""

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "it",
                 stream: TextIO | None = None, every_s: float = PLAIN_EVERY_S) -> None:
        self.total, self.desc, self.done, self.unit = total, desc, initial, unit
        self.stream = stream or sys.stderr
        self.every_s, self.values = every_s, ""
        self.bar = (tqdm(total=total, initial=initial, desc=desc, unit=unit, file=self.stream)
                    if self.stream.isatty() else None)
        self.started = self.last = time.monotonic()
        self.first = initial

    def update(self, n: int = 1, **values: float) -> None:
        """``n`` more steps done; ``values`` (losses) are shown with the count."""
        self.done += n
        self.values = " ".join(f"{k}={v:.4g}" for k, v in values.items())
        if self.bar is not None:
            self.bar.update(n)
            if values:
                self.bar.set_postfix_str(self.values)
        elif time.monotonic() - self.last >= self.every_s:
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        rate = (self.done - self.first) / max(self.last - self.started, 1e-9)
        print(f"{self.desc}: {self.done}/{self.total} {self.unit} ({rate:.3g} {self.unit}/s)"
              + (f" {self.values}" if self.values else ""), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
