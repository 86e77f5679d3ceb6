"""Serve the model sets of a repository on a running Triton (explicit model control).

Triton runs with ``--model-control-mode=explicit --load-model=*``: it loads every model
of its repository at start, and later only what a client asks for through its repository
API. :class:`ModelSetLoader` is that client: :meth:`~ModelSetLoader.sync` reads the
manifests (``<set>.modelset.json``) of a repository and asks Triton to load each model of
a set, and then its ``<set>-decode`` ensemble, that Triton's repository holds but does not
serve. A model that is ready is never loaded again, so models that a new set shares with
others (its base set's generator and encoder) keep serving them without a pause. A set
whose models are not (all) in Triton's repository yet waits for a later sync.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from styleprobe.backends.triton import triton_client
from styleprobe.modelset import ModelSet, ModelSetError, list_model_sets, load_model_set
from styleprobe.serving.triton_config import ENSEMBLE_VERSION, decode_ensemble_name

log = logging.getLogger(__name__)
LOAD_TIMEOUT_S = 600.0  # a load on GPU warms up every batch size
INDEX_TIMEOUT_S = 10.0
Model = tuple[str, str]  # Triton name, version


def triton_models(model_set: ModelSet) -> list[Model]:
    """The set's models on Triton, in load order: its four models, then its ensemble."""
    models = [(e.triton_name, str(e.version)) for e in model_set.models.values()]
    return [*dict.fromkeys(models), (decode_ensemble_name(model_set.name), str(ENSEMBLE_VERSION))]


class ModelSetLoader:
    """Loads the model sets of ``repository`` onto the Triton at ``url`` (gRPC)."""

    def __init__(self, repository: Path, url: str, tls: dict[str, Any] | None = None) -> None:
        """``tls``: TLS options of the Triton client (:func:`styleprobe.tls.triton_tls`)."""
        self.tls = tls or {}
        self.repository, self.url = Path(repository), url
        self._client: grpcclient.InferenceServerClient | None = None
        self._failed: dict[str, str] = {}  # set -> why its last load failed (logged once)

    @property
    def client(self) -> grpcclient.InferenceServerClient:
        if self._client is None:
            self._client = triton_client(self.url, **self.tls)
        return self._client

    def sync(self) -> dict[str, list[str]]:
        """Load what the repository's sets need and Triton does not serve yet.

        Returns the models loaded, by set. A set that fails to load is logged (once per
        cause) and tried again by the next call; raises only if Triton does not answer.
        """
        index = self.client.get_model_repository_index(
            as_json=True, client_timeout=INDEX_TIMEOUT_S).get("models", [])
        present = {m["name"] for m in index}
        ready = {(m["name"], m.get("version", "")) for m in index if m.get("state") == "READY"}
        loaded: dict[str, list[str]] = {}
        for name in list_model_sets(self.repository):
            try:
                models = triton_models(load_model_set(self.repository, name))
            except ModelSetError:
                continue  # a manifest being written, or broken: ListModelSets reports it
            missing = [model for model, version in models if (model, version) not in ready]
            if missing and present.issuperset(missing) and self._load(name, missing):
                loaded[name] = missing
                ready.update(models)
        return loaded

    def _load(self, name: str, models: list[str]) -> bool:
        log.info("loading model set", extra={"model_set": name, "models": models,
                                             "triton": self.url})
        try:
            for model in models:
                self.client.load_model(model, client_timeout=LOAD_TIMEOUT_S)
        except InferenceServerException as exc:
            cause = f"{model}: {exc.message()}"
            if self._failed.get(name) != cause:
                log.error("model set failed to load", extra={"model_set": name, "error": cause})
            self._failed[name] = cause
            return False
        self._failed.pop(name, None)
        log.info("model set loaded", extra={"model_set": name, "triton": self.url})
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
