"""The Triton model backend: a model set's models on Triton Inference Server, over gRPC.

Names and versions come from the manifest (see :mod:`styleprobe.serving.triton_config`);
:meth:`TritonBackend.decode_and_classify` is one call to the ``<set>-decode`` ensemble.
The gRPC client is created on first use in each process (never inherited across a fork).
Batches are cut into chunks of the model's ``max_batch_size``, read from the server, and
the chunks are sent concurrently so that Triton's dynamic batcher and instances get work.
Every call has a deadline; UNAVAILABLE is retried with exponential backoff (capped at
``MAX_BACKOFF_S``) for up to ``retry_s`` seconds, so a Triton restart is waited out, and
every error is a :class:`~styleprobe.backends.base.BackendError` naming the model and the cause.
Each inference request that succeeds is recorded in the metrics (latency, batch size).

The channel reconnects at most ``RECONNECT_BACKOFF_MS`` after a server comes back
(gRPC's default backoff grows to two minutes, so a restarted Triton looked down for long
after it was ready): see :func:`triton_client`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from styleprobe.backends.base import BackendError, checked_batch
from styleprobe.metrics import observe_backend_call
from styleprobe.modelset import ModelSet, TensorSpec
from styleprobe.outages import OutageListener
from styleprobe.serving.triton_config import ENSEMBLE_VERSION, decode_ensemble_name, output_name

log = logging.getLogger(__name__)
T = TypeVar("T")
UNAVAILABLE = "StatusCode.UNAVAILABLE"
DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
NOT_FOUND = "StatusCode.NOT_FOUND"
RECONNECT_BACKOFF_MS = 1000  # the channel's reconnect backoff: first, least and most
MAX_BACKOFF_S = 2.0  # the longest wait between two retries of a call
MAX_MESSAGE_BYTES = 2**31 - 1  # tritonclient's own limit (its default channel options)


def channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel options plus a reconnect backoff of about 1 s."""
    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS),
    ]


def triton_client(url: str, **tls: Any) -> grpcclient.InferenceServerClient:
    """A client of Triton at ``url`` whose channel reconnects within about 1 s; ``tls``:
    TLS options (:func:`styleprobe.tls.triton_tls`)."""
    return grpcclient.InferenceServerClient(url, channel_args=channel_args(), **tls)


@dataclass(frozen=True)
class ServedModel:
    """A Triton model as the backend calls it: name, version and named tensors."""

    name: str
    version: str
    inputs: list[tuple[str, TensorSpec]]
    outputs: list[tuple[str, TensorSpec]]


def served_models(model_set: ModelSet) -> dict[str, ServedModel]:
    """The four models of ``model_set`` by kind, plus its ensemble as ``decode``."""
    served = {
        kind: ServedModel(entry.triton_name, str(entry.version),
                          [(s.name, s) for s in entry.inputs],
                          [(output_name(s, i), s) for i, s in enumerate(entry.outputs)])
        for kind, entry in model_set.models.items()
    }
    w = model_set.models["synthesis"].inputs[0]
    image = model_set.models["synthesis"].outputs[0]
    logits = model_set.models["classifier"].outputs[0]
    served["decode"] = ServedModel(decode_ensemble_name(model_set.name), str(ENSEMBLE_VERSION),
                                   [(w.name, w)], [(image.name, image), (logits.name, logits)])
    return served


class TritonBackend:
    """:class:`~styleprobe.backends.base.ModelBackend` over ``tritonclient.grpc``.

    ``timeout_s`` is the deadline of every call; UNAVAILABLE is retried for up to
    ``retry_s`` seconds (and at most ``retries`` times, when given), waiting ``backoff_s``,
    then twice as long each time up to ``MAX_BACKOFF_S``; up to ``concurrency`` chunks of
    one batch are in flight at once.
    """

    def __init__(self, model_set: ModelSet, url: str, timeout_s: float = 30.0,
                 retries: int | None = None, backoff_s: float = 0.25, concurrency: int = 4,
                 retry_s: float = 120.0, tls: dict[str, Any] | None = None) -> None:
        if (concurrency < 1 or (retries is not None and retries < 0) or timeout_s <= 0
                or retry_s < 0):
            raise ValueError("need concurrency >= 1, retries >= 0, retry_s >= 0 and "
                             "timeout_s > 0")
        self.model_set = model_set
        self.url = url
        self.timeout_s, self.retries, self.backoff_s = timeout_s, retries, backoff_s
        self.retry_s = retry_s
        self.listener: OutageListener | None = None  # told when calls wait for Triton
        self.concurrency = concurrency
        self.tls = tls or {}
        self._served = served_models(model_set)
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._client: grpcclient.InferenceServerClient | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._max_batch: dict[str, int] = {}

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return self._infer("mapping", z)[0]

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        return self._infer("synthesis", w)[0]

    def encoder(self, image: np.ndarray) -> np.ndarray:
        return self._infer("encoder", image)[0]

    def classifier(self, image: np.ndarray) -> np.ndarray:
        return self._infer("classifier", image)[0]

    def styles(self, w: np.ndarray) -> np.ndarray:
        return self._infer("styles", w)[0]

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        return self._infer("stylesynthesis", styles)[0]

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images, logits = self._infer("decode", w)
        return images, logits

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid() and self._client and self._pool:
                self._pool.shutdown(wait=True)
                self._client.close()
            self._pid, self._client, self._pool = None, None, None
            self._max_batch.clear()

    def _connection(self) -> tuple[grpcclient.InferenceServerClient, ThreadPoolExecutor]:
        """This process's client and thread pool, created on first use after any fork."""
        with self._lock:
            if self._pid != os.getpid() or self._client is None or self._pool is None:
                self._client = triton_client(self.url, **self.tls)
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="triton")
                self._max_batch = {}
                self._pid = os.getpid()
            return self._client, self._pool

    def _infer(self, kind: str, batch: np.ndarray) -> list[np.ndarray]:
        if kind not in self._served:
            raise BackendError(f"model set {self.model_set.name!r} has no {kind} model "
                               "(export its StyleSpace: scripts/stylespace_from_model_set.py)")
        served = self._served[kind]
        batch = checked_batch(served.name, "input", batch, served.inputs[0][1].dims)
        if len(batch) == 0:
            return [np.zeros((0, *spec.dims), np.float32) for _, spec in served.outputs]
        client, pool = self._connection()
        size = self._max_batch_size(client, served)
        chunks = [batch[i:i + size] for i in range(0, len(batch), size)]
        if len(chunks) == 1:
            results = [self._infer_chunk(client, kind, chunks[0])]
        else:
            results = list(pool.map(lambda c: self._infer_chunk(client, kind, c), chunks))
        return [np.concatenate([r[i] for r in results]) for i in range(len(served.outputs))]

    def _infer_chunk(self, client: grpcclient.InferenceServerClient, kind: str,
                     chunk: np.ndarray) -> list[np.ndarray]:
        """One inference request; its latency and batch size are recorded (metrics)."""
        served = self._served[kind]
        name, spec = served.inputs[0]
        tensor = grpcclient.InferInput(name, list(chunk.shape), spec.dtype)
        tensor.set_data_from_numpy(np.ascontiguousarray(chunk))
        wanted = [grpcclient.InferRequestedOutput(n) for n, _ in served.outputs]
        started = time.perf_counter()
        result = self._call(served, lambda: client.infer(
            served.name, [tensor], model_version=served.version, outputs=wanted,
            client_timeout=self.timeout_s))
        observe_backend_call(kind, len(chunk), time.perf_counter() - started)
        arrays = []
        for out_name, out_spec in served.outputs:
            array = result.as_numpy(out_name)
            if array is None:
                raise BackendError(f"{served.name}: Triton returned no output {out_name!r}")
            array = checked_batch(served.name, f"output {out_name!r}", array, out_spec.dims)
            if len(array) != len(chunk):
                raise BackendError(f"{served.name}: {len(chunk)} inputs gave {len(array)} "
                                   f"outputs {out_name!r}")
            arrays.append(array)
        return arrays

    def _max_batch_size(self, client: grpcclient.InferenceServerClient,
                        served: ServedModel) -> int:
        """On first use: check that the model is ready and configured as the manifest says."""
        if served.name in self._max_batch:
            return self._max_batch[served.name]
        ready = self._call(served, lambda: client.is_model_ready(
            served.name, served.version, client_timeout=self.timeout_s))
        if not ready:
            raise BackendError(self._not_ready(client, served))
        config = self._call(served, lambda: client.get_model_config(
            served.name, served.version, as_json=True, client_timeout=self.timeout_s))["config"]
        _check_config(served, config)
        size = int(config.get("max_batch_size", 0))
        if size < 1:
            raise BackendError(f"{served.name}: max_batch_size is {size} on the server; "
                               "StyleProbe's models take batches")
        self._max_batch[served.name] = size
        return size

    def _not_ready(self, client: grpcclient.InferenceServerClient, served: ServedModel) -> str:
        index = self._call(served, lambda: client.get_model_repository_index(
            as_json=True, client_timeout=self.timeout_s)).get("models", [])
        entries = [m for m in index if m.get("name") == served.name]
        if not entries:
            return (f"model {served.name!r} is not in the repository of Triton at {self.url} "
                    f"(is model set {self.model_set.name!r} deployed there?)")
        states = "; ".join(f"version {m.get('version', '?')}: {m.get('state', 'unknown')} "
                           f"{m.get('reason', '')}".strip() for m in entries)
        return (f"model {served.name!r} version {served.version} is not ready on Triton at "
                f"{self.url} ({states})")

    def _call(self, served: ServedModel, request: Callable[[], T]) -> T:
        """``request()``, retried with backoff on UNAVAILABLE for up to ``retry_s``
        seconds (a Triton restart is waited out); errors name the model."""
        started, attempts = time.monotonic(), 0
        while True:
            try:
                answer = request()
            except InferenceServerException as exc:
                if exc.status() != UNAVAILABLE:  # Triton answered (a refusal is an answer)
                    if attempts and self.listener is not None:
                        self.listener.back("triton")
                    raise BackendError(self._describe(served, exc)) from exc
                attempts += 1
                delay = min(self.backoff_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
                left = started + self.retry_s - time.monotonic()
                if (self.retries is not None and attempts > self.retries) or left <= 0:
                    raise BackendError(
                        f"{served.name}: Triton at {self.url} is unavailable (server down?) "
                        f"after {attempts} attempts in {time.monotonic() - started:.1f} s: "
                        f"{exc.message()}") from exc
                delay = min(delay, left)
                log.warning("triton unavailable; retrying", extra={
                    "model": served.name, "attempt": attempts, "delay_s": delay})
                if attempts == 1 and self.listener is not None:
                    self.listener.waiting("triton", self.retry_s)
                time.sleep(delay)
                continue
            if attempts and self.listener is not None:
                self.listener.back("triton")
            return answer

    def _describe(self, served: ServedModel, exc: InferenceServerException) -> str:
        status, message = exc.status(), exc.message()
        if status == DEADLINE_EXCEEDED:
            return (f"{served.name}: no answer from Triton at {self.url} within "
                    f"{self.timeout_s:g} s (deadline exceeded)")
        if status == NOT_FOUND:
            return f"model {served.name!r} is not served by Triton at {self.url}: {message}"
        if status == INVALID_ARGUMENT:
            return f"{served.name}: Triton rejected the request (shape or type mismatch): {message}"
        return f"{served.name}: Triton failed ({status}): {message}"


def _check_config(served: ServedModel, config: dict[str, Any]) -> None:
    """The server's tensors must be those of the manifest: names, types and dims."""
    for role, expected, actual in (("input", served.inputs, config.get("input", [])),
                                   ("output", served.outputs, config.get("output", []))):
        on_server = {t["name"]: t for t in actual}
        for name, spec in expected:
            tensor = on_server.get(name)
            if tensor is None:
                raise BackendError(f"{served.name}: the server's configuration has no {role} "
                                   f"{name!r} (it has {', '.join(on_server) or 'none'})")
            dims = [int(d) for d in tensor.get("dims", [])]
            dtype = tensor.get("data_type", "")
            if dims != list(spec.dims) or dtype != f"TYPE_{spec.dtype}":
                raise BackendError(f"{served.name}: {role} {name!r} is {dtype} {dims} on the "
                                   f"server but {spec.dtype} {spec.dims} in the model set "
                                   "manifest (shape mismatch)")
