"""Typed reads and writes over an artifact store: arrays (``.npy``) and JSON records."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from styleprobe.storage.base import ArtifactStore

JSON_TYPE = "application/json"
NPY_TYPE = "application/x-npy"


def job_key(job_id: str, name: str) -> str:
    """The key of a job's artifact: ``jobs/<job id>/<name>``."""
    return f"jobs/{job_id}/{name}"


def put_array(store: ArtifactStore, key: str, array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    store.put(key, buffer.getvalue(), NPY_TYPE)
    return key


def get_array(store: ArtifactStore, key: str) -> np.ndarray:
    return np.load(io.BytesIO(store.get(key)), allow_pickle=False)


def put_json(store: ArtifactStore, key: str, record: dict[str, Any]) -> str:
    store.put(key, (json.dumps(record, indent=2) + "\n").encode(), JSON_TYPE)
    return key


def get_json(store: ArtifactStore, key: str) -> dict[str, Any]:
    return json.loads(store.get(key))
