"""Instances grouped by series, handed on once a series has been quiet for a while.

A sending modality or PACS pushes a series instance by instance over one or more
associations; nothing says when it is complete. :class:`SeriesBuffer` collects each
instance under its Series Instance UID and hands the series to ``ready`` (in a thread of
its own) once no instance of it arrived for ``timeout_s`` (the MONAI Deploy Informatics
Gateway's shape). A second instance with the same SOP Instance UID replaces the first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom import Dataset

log = logging.getLogger(__name__)


@dataclass
class Received:
    """One instance as it arrived: the dataset and the AE title that sent it."""

    dataset: Dataset
    calling_ae: str


@dataclass
class Series:
    """The instances of one series received so far, by SOP Instance UID."""

    uid: str
    instances: dict[str, Received] = field(default_factory=dict)
    last_at: float = 0.0


class SeriesBuffer:
    """Series in progress; ``ready(series)`` is called for each one after ``timeout_s`` of
    quiet. :meth:`close` hands on what is left at once."""

    def __init__(self, timeout_s: float, ready: Callable[[Series], None],
                 poll_s: float = 0.2) -> None:
        self.timeout_s, self.ready, self.poll_s = timeout_s, ready, poll_s
        self._series: dict[str, Series] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="series-timeout", daemon=True)
        self._thread.start()

    def add(self, dataset: Dataset, calling_ae: str) -> None:
        """Add an instance to its series (and restart that series' quiet time)."""
        uid = str(dataset.SeriesInstanceUID)
        with self._lock:
            series = self._series.setdefault(uid, Series(uid))
            series.instances[str(dataset.SOPInstanceUID)] = Received(dataset, calling_ae)
            series.last_at = time.monotonic()

    def pending(self) -> int:
        """Series waiting for their timeout."""
        with self._lock:
            return len(self._series)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._hand_on(time.monotonic() - self.timeout_s)

    def _hand_on(self, quiet_since: float) -> None:
        with self._lock:
            done = [s for s in self._series.values() if s.last_at <= quiet_since]
            for series in done:
                del self._series[series.uid]
        for series in done:
            log.info("series complete", extra={"instances": len(series.instances)})
            try:
                self.ready(series)
            except Exception:
                log.exception("series could not be handed on")

    def close(self) -> None:
        """Stop waiting; hand on every series still held."""
        self._stop.set()
        self._thread.join()
        self._hand_on(float("inf"))
