"""Coverage, precision/recall and inversion identity of model sets, on their own (the same
measures ``styleprobe evaluate`` reports, without the rest of the evaluation).

    .venv/bin/python scripts/measure_generators.py knee-oa histology-tumour [--samples 2000]
        [--card-dir docs/model-cards]

Prints one JSON object per model set: identity on the first 100 held-out test phantoms of
``styleprobe evaluate`` (its seed), coverage and precision/recall on ``--samples`` real
phantoms (the realism set's seed) against as many generated images (truncation 1). With
``--card-dir``, rewrites each set's model card with these numbers added to its manifest's
(the manifest itself is left as exported).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch

from styleprobe.backends import open_backend
from styleprobe.config import Settings
from styleprobe.data.datasets import PHANTOMS, render
from styleprobe.evaluation.coverage import card_metrics, measure_coverage
from styleprobe.evaluation.evaluate import EVALUATION_SEED
from styleprobe.evaluation.identity import GALLERY, identity
from styleprobe.evaluation.oracle import load_or_train_oracle
from styleprobe.explain.inputs import to_model_layout
from styleprobe.modelset import load_model_set
from styleprobe.training.modelcard import write_model_card


def measure(name: str, samples: int, seed: int) -> dict:
    settings = Settings()
    backend = open_backend(settings, name)
    try:
        model_set = backend.model_set
        prep, phantoms = model_set.preprocessing, model_set.training["data"]
        test = render(PHANTOMS[phantoms](seed=EVALUATION_SEED + seed, size=prep.resolution),
                      GALLERY)
        x = to_model_layout(test.images, prep)
        reconstructions = backend.synthesis(backend.encoder(x))
        real = render(PHANTOMS[phantoms](seed=EVALUATION_SEED + seed + 1, size=prep.resolution),
                      samples)
        z = np.random.default_rng(seed + 11).standard_normal(
            (samples, model_set.z_dim)).astype(np.float32)
        fake = np.concatenate([backend.synthesis(backend.mapping(z[i:i + 256]))
                               for i in range(0, samples, 256)])
        oracle = load_or_train_oracle(Path(settings.evaluation_dir), phantoms, prep.resolution)
        return {"model_set": name, "identity": identity(x, reconstructions),
                "coverage": measure_coverage(oracle, to_model_layout(real.images, prep), fake,
                                             real.factors)}
    finally:
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_sets", nargs="+")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--card-dir", default=None, help="rewrite the model cards here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name in args.model_sets:
        measured = measure(name, args.samples, args.seed)
        json.dump(measured, sys.stdout, indent=1)
        print()
        if args.card_dir is not None:
            write_card(measured, Path(args.card_dir))


def write_card(measured: dict, card_dir: Path) -> None:
    """The set's card with the measured identity and coverage among its numbers, and the
    training record of ``<card_dir>/records/<set>.json`` where there is one."""
    model_set = load_model_set(Path(Settings().model_repository), measured["model_set"])
    metrics = {**model_set.metrics, "identity_top1": measured["identity"]["top1"],
               "identity_spread_ratio": measured["identity"]["spread_ratio"],
               **card_metrics(measured["coverage"])}
    record = card_dir / "records" / f"{model_set.name}.json"
    training = ({**model_set.training, "record": json.loads(record.read_text())}
                if record.is_file() else model_set.training)
    write_model_card(dataclasses.replace(model_set, metrics=metrics, training=training),
                     card_dir, f"{model_set.name}-samples.png")


if __name__ == "__main__":
    main()
