"""Inversion identity with optimisation refinement of the encoding, against the encoder
alone: top-1 retrieval, spread ratio, pixel MSE, agreement, flip rate and the latent
predictor's AUC on the encoded test images, for several refinement lengths.

    .venv/bin/python scripts/measure_refinement.py knee-oa [--steps 0,20,50] [--n 100]

Uses the model set's exported (TorchScript) synthesis for the gradient steps, the first
``--n`` held-out test phantoms of ``styleprobe evaluate`` and a direction probed on
``--probe-samples`` sampled latents. Prints one JSON line per setting.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from styleprobe.backends import open_backend
from styleprobe.config import Settings
from styleprobe.data.datasets import PHANTOMS, render
from styleprobe.evaluation.evaluate import EVALUATION_SEED
from styleprobe.evaluation.identity import identity
from styleprobe.evaluation.oracle import load_or_train_oracle
from styleprobe.evaluation.traversals import traverse_many, validity
from styleprobe.explain.direction import ensure_direction, load_direction
from styleprobe.explain.inputs import to_model_layout
from styleprobe.explain.refine import RefineSettings, refine
from styleprobe.explain.scores import predicted, target_probability
from styleprobe.explain.spec import LambdaGrid, ProbeSettings, SearchSettings
from styleprobe.storage.local import LocalStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_set")
    parser.add_argument("--steps", default="0,20,50")
    parser.add_argument("--lr", type=float, default=RefineSettings.lr)
    parser.add_argument("--prior-weight", type=float, default=RefineSettings.prior_weight)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--probe-samples", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = Settings()
    backend = open_backend(settings, args.model_set)
    model_set = backend.model_set
    prep, phantoms = model_set.preprocessing, model_set.training["data"]
    entry = model_set.models["synthesis"]
    synthesis = torch.jit.load(str(Path(settings.model_repository) / entry.triton_name
                                   / str(entry.version) / "model.pt"))
    target = model_set.default_target
    class_index = model_set.classifier.class_index(target)
    threshold = model_set.classifier.threshold
    test = render(PHANTOMS[phantoms](seed=EVALUATION_SEED, size=prep.resolution), args.n)
    assert test.labels is not None
    x = to_model_layout(test.images, prep)
    p_input = target_probability(backend.classifier(x), class_index)
    z = np.random.default_rng(5).standard_normal((5000, model_set.z_dim)).astype(np.float32)
    latent_std = torch.from_numpy(backend.mapping(z).std(axis=0))
    oracle = load_or_train_oracle(Path(settings.evaluation_dir), phantoms, prep.resolution)
    with tempfile.TemporaryDirectory() as folder:
        store = LocalStore(folder)
        direction = load_direction(store, ensure_direction(
            backend, store, target, ProbeSettings(samples=args.probe_samples)))
    w_encoder = torch.from_numpy(backend.encoder(x))
    for steps in (int(s) for s in args.steps.split(",")):
        started = time.perf_counter()
        w = (w_encoder if steps == 0 else
             refine(synthesis, w_encoder, torch.from_numpy(x), latent_std,
                    RefineSettings(steps=steps, lr=args.lr, prior_weight=args.prior_weight)))
        seconds = time.perf_counter() - started
        w_np = w.numpy().astype(np.float32)
        rec, logits = backend.decode_and_classify(w_np)
        p_rec = target_probability(logits, class_index)
        traversals = traverse_many(backend, w_np, p_rec, direction, LambdaGrid().values(),
                                   oracle, SearchSettings())
        shift = ((w - w_encoder) / latent_std).square().mean(dim=1).sqrt()
        print(json.dumps({
            "model_set": args.model_set, "steps": steps, "lr": args.lr,
            "prior_weight": args.prior_weight, "seconds": round(seconds, 1),
            "identity": identity(x, rec),
            "pixel_mse": float((((rec - x) / 2) ** 2).mean()),
            "agreement": float(np.mean(predicted(p_input, threshold)
                                       == predicted(p_rec, threshold))),
            "flip_rate": validity(traversals)["flip_rate"],
            "latent_auc_real": float(roc_auc_score(test.labels == 1, w_np @ direction.array())),
            "direction_auc_sampled": direction.auc,
            "latent_shift_std_rms": float(shift.mean()),
        }), flush=True)
    backend.close()


if __name__ == "__main__":
    main()
