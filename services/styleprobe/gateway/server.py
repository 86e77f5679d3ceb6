"""The gateway process: a C-STORE SCP (and optionally a STOW-RS endpoint, :mod:`.stow`)
that explains what it receives and stores the results back.

:class:`Gateway` accepts every storage SOP class (and C-ECHO) under its AE title, answers
each C-STORE at once and holds the instance in a :class:`~.series.SeriesBuffer`. A quiet
series goes to a small thread pool, where each instance is routed, explained, turned into
result objects and sent on. Logs name jobs and a fingerprint of the idempotency key,
never a patient attribute or a UID.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from pydicom import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from styleprobe.config import Settings
from styleprobe.gateway.calls import Engine, EngineError, JobFailedError, Outcome
from styleprobe.gateway.deidentify import engine_copy, idempotency_key
from styleprobe.gateway.dicom_tls import client_context, server_context
from styleprobe.gateway.results import build_results
from styleprobe.gateway.routing import Route, parse_routes, route
from styleprobe.gateway.send import Destination, SendError, c_store, stow
from styleprobe.gateway.series import Received, Series, SeriesBuffer
from styleprobe.gateway.stow import StowServer
from styleprobe.metrics import count_gateway_instance, start_metrics_server

log = logging.getLogger(__name__)
WORKERS = 4  # instances explained at once
ATTEMPTS = 3  # jobs an instance gets when they fail (each under its own key)
SUCCESS, CANNOT_UNDERSTAND = 0x0000, 0xC000


class Gateway:
    """The DICOM gateway of ``settings`` (its AE title, port, routes, destination)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.routes: list[Route] = parse_routes(settings.gateway_routes)
        self.destination = (Destination.parse(settings.gateway_destination)
                            if settings.gateway_destination else None)
        host, _, port = settings.gateway_listen.rpartition(":")
        self.address = (host or "0.0.0.0", int(port))
        self.tls, self.destination_tls = server_context(settings), client_context(settings)
        self.stow: StowServer | None = None  # first: it may refuse its settings
        if settings.gateway_dicomweb_listen:
            web_host, _, web_port = settings.gateway_dicomweb_listen.rpartition(":")
            self.stow = StowServer((web_host or "0.0.0.0", int(web_port)),
                                   settings.gateway_dicomweb_token, self.receive)
        self.engine = Engine(settings)
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="gateway")
        self.buffer = SeriesBuffer(settings.gateway_series_timeout_s, self._series_ready)
        self.ae = AE(ae_title=settings.gateway_ae_title)
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.ae.add_supported_context(Verification)

    def start(self) -> None:
        """Listen (in threads of its own) on the DICOM port, and serve the metrics on
        ``STYLEPROBE_METRICS_PORT`` when set."""
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # a line per message
        if self.settings.metrics_port:
            start_metrics_server(self.settings.metrics_port, self.settings.metrics_host)
        self.ae.start_server(self.address, block=False, ssl_context=self.tls,
                             evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        if self.stow is not None:
            self.stow.start()
        log.info("dicom gateway listening", extra={
            "ae_title": self.settings.gateway_ae_title, "port": self.address[1],
            "tls": self.tls is not None, "routes": len(self.routes),
            "stow_port": self.stow.port if self.stow else None})

    def serve(self) -> None:
        """Listen until stopped (Ctrl-C, SIGTERM); then finish what was received."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.start()
        try:
            stop.wait()
        finally:
            log.info("dicom gateway stopping: finishing the series received")
            self.close()

    def close(self) -> None:
        self.ae.shutdown()
        if self.stow is not None:
            self.stow.close()
        self.buffer.close()
        self.pool.shutdown(wait=True)
        self.engine.close()

    def _on_store(self, event: evt.Event) -> int:
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
        except Exception:  # a dataset pydicom cannot read
            log.warning("a received instance cannot be read")
            return CANNOT_UNDERSTAND
        self.receive(dataset, str(event.assoc.requestor.ae_title))
        return SUCCESS

    def receive(self, dataset: Dataset, calling_ae: str) -> None:
        """Hold an instance received (by C-STORE or STOW-RS) in its series."""
        count_gateway_instance("received")
        self.buffer.add(dataset, calling_ae)

    def _series_ready(self, series: Series) -> None:
        for received in series.instances.values():
            self.pool.submit(self._handle, received)

    def _handle(self, received: Received) -> None:
        try:
            self.process(received.dataset, received.calling_ae)
        except Exception:
            log.exception("instance not processed")

    def process(self, source: Dataset, calling_ae: str) -> list[Dataset]:
        """Route, explain and answer one instance; the result objects sent (none when no
        rule routes it or its job did not succeed)."""
        started = time.monotonic()
        chosen = route(self.routes, calling_ae, source)
        if chosen is None:
            log.info("instance not routed", extra={"calling_ae": calling_ae,
                                                   "modality": source.get("Modality", "")})
            count_gateway_instance("unrouted")
            return []
        outcome = self._explain(source, chosen)
        if outcome is None:
            count_gateway_instance("not_explained")
            return []
        fingerprint = idempotency_key(source, chosen.model_set)[-12:]
        results = build_results(source, outcome.job, outcome.frames, outcome.differences)
        try:
            if self.destination is not None:
                c_store(results, self.destination, self.settings.gateway_ae_title,
                        self.destination_tls)
            if self.settings.gateway_stow_url:
                stow(results, self.settings.gateway_stow_url)
        except SendError as exc:
            log.error("results not sent", extra={"key": fingerprint, "error": str(exc)})
            count_gateway_instance("not_sent")
            return []
        count_gateway_instance("sent", time.monotonic() - started)
        log.info("results sent", extra={"job_id": outcome.job.job_id, "key": fingerprint,
                                        "objects": len(results)})
        return results

    def _explain(self, source: Dataset, chosen: Route) -> Outcome | None:
        """The explanation of ``source``; a job that failed is followed by another (up to
        :data:`ATTEMPTS`, each under its own key: a re-sent instance finds the last);
        None if none succeeded or the orchestrator refused it."""
        data = engine_copy(source)
        for attempt in range(1, ATTEMPTS + 1):
            key = idempotency_key(source, chosen.model_set, attempt)
            try:
                return self.engine.explain(data, chosen, key)
            except JobFailedError as exc:
                log.warning("job failed", extra={"key": key[-12:], "attempt": attempt,
                                                 "error": str(exc)})
            except EngineError as exc:
                log.warning("instance not explained", extra={"key": key[-12:],
                                                             "error": str(exc)})
                return None
        return None
