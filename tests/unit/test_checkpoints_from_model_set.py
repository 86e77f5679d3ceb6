"""scripts/checkpoints_from_model_set.py: a bundled set's networks back as checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from styleprobe.backends.local import LocalBackend
from styleprobe.config import DEFAULT_MODEL_REPOSITORY, REPO_ROOT
from styleprobe.training.classifier import load_classifier
from styleprobe.training.encoder import decode, load_encoder
from styleprobe.training.gan import load_generator

SET = "histology-tumour"  # the smaller bundled set (32x32)


def test_rebuilt_checkpoints_compute_what_the_exported_models_compute(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "services")}
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "checkpoints_from_model_set.py"), SET,
         "--repository", str(DEFAULT_MODEL_REPOSITORY), "--runs", str(tmp_path)],
        capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr
    run = tmp_path / SET
    G = load_generator(run / "gan" / "checkpoint.pt")
    E, encoder_state = load_encoder(run / "encoder" / "encoder.pt")
    C, classifier_state = load_classifier(run / "classifier" / "classifier.pt")
    backend = LocalBackend(DEFAULT_MODEL_REPOSITORY, SET)
    assert encoder_state["step"] == backend.model_set.training["encoder"]["steps"]
    assert classifier_state["class_names"] == list(backend.model_set.classifier.class_names)

    z = np.random.default_rng(0).standard_normal((4, G.cfg.z_dim)).astype(np.float32)
    w = backend.mapping(z)
    images = backend.synthesis(w)
    with torch.no_grad():
        np.testing.assert_allclose(G.mapping(torch.from_numpy(z)).numpy(), w, atol=1e-5)
        np.testing.assert_allclose(decode(G, torch.from_numpy(w)).numpy(), images, atol=1e-5)
        np.testing.assert_allclose(E(torch.from_numpy(images)).numpy(),
                                   backend.encoder(images), atol=1e-5)
        np.testing.assert_allclose(C(torch.from_numpy(images)).numpy(),
                                   backend.classifier(images), atol=1e-5)
