"""The Triton backend against a real tritonserver: parity with the local backend, errors."""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import required
from styleprobe.backends import BackendError, open_backend
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.modelset import load_model_set
from styleprobe.serving.triton_config import MAX_BATCH_SIZE
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.storage.local import LocalStore

triton = required.module("styleprobe.backends.triton")
TOLERANCE = 1e-5
N = 2 * MAX_BATCH_SIZE + 7  # three chunks, sent concurrently


def backends(repository: Path, server: TritonProcess, name: str):  # -> (local, triton)
    remote = triton.TritonBackend(load_model_set(repository, name), server.grpc_url)
    return LocalBackend(repository, name), remote


@pytest.mark.parametrize("name", ["tiny", "tiny-rgb"])
def test_every_model_matches_the_local_backend(two_set_repository: Path,
                                               triton_server: TritonProcess, name: str) -> None:
    local, remote = backends(two_set_repository, triton_server, name)
    rng = np.random.default_rng(3)
    z = rng.standard_normal((N, local.model_set.z_dim)).astype(np.float32)
    w = local.mapping(z)
    image = local.synthesis(w)
    noise = rng.uniform(-1, 1, image.shape).astype(np.float32)
    for kind, batch in (("mapping", z), ("synthesis", w), ("encoder", image),
                        ("classifier", image), ("classifier", noise)):
        expected, actual = getattr(local, kind)(batch), getattr(remote, kind)(batch)
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() <= TOLERANCE, kind
    images, logits = remote.decode_and_classify(w)
    np.testing.assert_allclose(images, image, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(logits, local.classifier(image), rtol=0, atol=TOLERANCE)
    assert [a.shape for a in remote.decode_and_classify(w[:0])] == [(0, *image.shape[1:]),
                                                                    (0, logits.shape[1])]
    remote.close()


def test_explanations_agree(two_set_repository: Path, triton_server: TritonProcess,
                            tmp_path: Path) -> None:
    """The engine's manifest numbers are the same whichever backend ran the models."""
    settings = Settings(model_repository=str(two_set_repository), backend="triton",
                        triton_url=triton_server.grpc_url)
    remote = open_backend(settings, "tiny")
    assert isinstance(remote, triton.TritonBackend)
    image = np.random.default_rng(8).random((16, 16)).astype(np.float32)
    spec = JobSpec.create(remote.model_set, lambdas="-3:3:17",
                          probe=ProbeSettings(samples=400))
    results = [Explainer(backend, LocalStore(tmp_path / kind)).explain(image, spec,
                                                                      job_id="same")
               for kind, backend in (("local", LocalBackend(two_set_repository, "tiny")),
                                     ("triton", remote))]
    local, served = (r.to_dict() for r in results)
    for key in ("prediction_input", "prediction_reconstruction", "probabilities", "lambdas"):
        np.testing.assert_allclose(served[key], local[key], rtol=0, atol=1e-6, err_msg=key)
    assert served["direction"]["auc"] == pytest.approx(local["direction"]["auc"], abs=1e-9)
    assert served["flip"]["found"] == local["flip"]["found"]
    if local["flip"]["found"]:
        assert served["flip"]["at_lambda"] == pytest.approx(local["flip"]["at_lambda"], abs=1e-6)
    assert served["models"] == local["models"]
    assert served["quality"] == local["quality"]


def test_wrong_input_shape_names_the_model(two_set_repository: Path,
                                           triton_server: TritonProcess) -> None:
    _, remote = backends(two_set_repository, triton_server, "tiny-rgb")
    with pytest.raises(BackendError, match=r"tiny-rgb-encoder: input has shape \[2, 1, 8, 8\]"):
        remote.encoder(np.zeros((2, 1, 8, 8), np.float32))


def test_manifest_that_disagrees_with_the_server_is_a_shape_mismatch(
        two_set_repository: Path, triton_server: TritonProcess) -> None:
    model_set = load_model_set(two_set_repository, "tiny")
    entry = model_set.models["classifier"]
    wrong = dataclasses.replace(entry, outputs=[dataclasses.replace(entry.outputs[0], dims=[5])])
    model_set.models["classifier"] = wrong
    remote = triton.TritonBackend(model_set, triton_server.grpc_url)
    with pytest.raises(BackendError, match=r"tiny-classifier: output 'logits__0' .*shape mismatch"):
        remote.classifier(np.zeros((1, 1, 16, 16), np.float32))


def test_missing_model_is_named(two_set_repository: Path, triton_server: TritonProcess) -> None:
    model_set = load_model_set(two_set_repository, "tiny")
    model_set.models["mapping"] = dataclasses.replace(model_set.models["mapping"],
                                                      triton_name="ghost-mapping")
    remote = triton.TritonBackend(model_set, triton_server.grpc_url, retries=0)
    with pytest.raises(BackendError, match="'ghost-mapping' is not in the repository"):
        remote.mapping(np.zeros((1, model_set.z_dim), np.float32))
    model_set.models["mapping"] = dataclasses.replace(model_set.models["mapping"],
                                                      triton_name="tiny-mapping", version=7)
    remote = triton.TritonBackend(model_set, triton_server.grpc_url, retries=0)
    with pytest.raises(BackendError, match="'tiny-mapping' version 7 is not ready"):
        remote.mapping(np.zeros((1, model_set.z_dim), np.float32))


def _child_mapping(remote, z: np.ndarray, queue) -> None:  # runs in a forked process
    queue.put(remote.mapping(z))


def test_each_process_gets_its_own_client(two_set_repository: Path,
                                          triton_server: TritonProcess) -> None:
    """A backend made before a fork connects lazily in the child, as Celery's prefork does."""
    _, remote = backends(two_set_repository, triton_server, "tiny")
    z = np.random.default_rng(4).standard_normal((3, remote.model_set.z_dim)).astype(np.float32)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child_mapping, args=(remote, z, queue))
    child.start()
    from_child = queue.get(timeout=120)
    child.join(30)
    assert child.exitcode == 0
    np.testing.assert_array_equal(from_child, remote.mapping(z))
