"""A model set added to the repository while tritonserver runs: loaded through Triton's
repository API (explicit model control), served, and no pause for the sets already served."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from styleprobe.backends.triton import TritonBackend
from styleprobe.modelset import load_model_set
from styleprobe.serving.loader import ModelSetLoader, triton_models
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.triton import add_classifier_copy

NEW_SET = "tiny-copy"
SERVED_WITHIN_S = 300.0  # the CPU stub imports torch: slow on the shared test machines


def test_a_set_added_while_triton_runs_is_served(
        tiny_repository: Path, tmp_path: Path,
        cpu_triton: Callable[..., TritonProcess]) -> None:
    repository = tmp_path / "model_repository"
    shutil.copytree(tiny_repository, repository)
    server = cpu_triton(repository, timeout_s=900)
    loader = ModelSetLoader(server.repository, server.grpc_url)
    existing = TritonBackend(load_model_set(repository, "tiny"), server.grpc_url, retries=0)
    w = np.random.default_rng(4).standard_normal((5, existing.model_set.w_dim)).astype(np.float32)
    expected_images, expected_logits = existing.decode_and_classify(w)
    errors: list[BaseException] = []
    calls = 0
    stop = threading.Event()

    def explain_existing() -> None:  # the existing set, all through the load
        nonlocal calls
        while not stop.is_set():
            try:
                _, logits = existing.decode_and_classify(w)
                np.testing.assert_allclose(logits, expected_logits, atol=1e-6)
            except BaseException as exc:
                errors.append(exc)
            calls += 1

    busy = threading.Thread(target=explain_existing)
    busy.start()
    try:
        started = time.monotonic()
        model_set = add_classifier_copy(repository, "tiny", NEW_SET)
        added = TritonBackend(model_set, server.grpc_url, retries=0)
        while not loader.client.is_model_ready(f"{NEW_SET}-decode"):
            assert time.monotonic() - started < SERVED_WITHIN_S, "the new set was not loaded"
            time.sleep(0.2)
        served_after_s = time.monotonic() - started
        images, logits = added.decode_and_classify(w)
    finally:
        stop.set()
        busy.join()
    print(f"{NEW_SET} served {served_after_s:.1f} s after its manifest appeared; "
          f"{calls} calls to tiny meanwhile")
    assert not errors, errors[:3]
    assert calls > 0
    np.testing.assert_allclose(images, expected_images, atol=1e-6)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-6)  # the same classifier
    assert loader.sync() == {}, "a served set is never loaded again"
    index = {m["name"]: m.get("state") for m in
             loader.client.get_model_repository_index(as_json=True)["models"]}
    assert all(index[name] == "READY" for name, _ in triton_models(model_set))
    assert server.log_path is not None
    log = server.log_path.read_text()
    for name, version in triton_models(existing.model_set):  # loaded once: at the start
        assert log.count(f'"loading: {name}:{version}"') == 1, name
    loader.close()
    existing.close()
    added.close()
