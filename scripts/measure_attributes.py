"""Attribute purity and separation, and the conditional direction, of one model set alone.

    python3 scripts/measure_attributes.py knee-oa [--n 24] [--probe-samples 2000]
        [--attribute-samples 8] [--top 5] [--out attributes-knee-oa.json]

The part of `styleprobe evaluate` that issue 21 adds (styleprobe.evaluation.attributes),
run without the rest: held-out phantoms of the evaluation's seed are encoded, the plain and
the orthogonalized directions probed (stored in STYLEPROBE_STORE_DIR like the
evaluation's) and traversed without flip search, then the attributes and the conditional
direction are measured against the cached oracle (STYLEPROBE_EVALUATION_DIR). Prints the
targets rows and writes every number as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from styleprobe.backends import open_backend
from styleprobe.config import Settings
from styleprobe.data.datasets import PHANTOMS, render
from styleprobe.evaluation.attributes import (
    AttributeEvaluationSettings,
    attribute_targets,
    evaluate_attributes,
)
from styleprobe.evaluation.evaluate import EVALUATION_SEED
from styleprobe.evaluation.oracle import load_or_train_oracle
from styleprobe.evaluation.traversals import traverse_many
from styleprobe.explain.direction import ensure_direction, load_direction
from styleprobe.explain.inputs import to_model_layout
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import AttributeSettings, LambdaGrid, ProbeSettings
from styleprobe.storage.local import LocalStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_set")
    parser.add_argument("--n", type=int, default=24, help="held-out phantoms")
    parser.add_argument("--probe-samples", type=int, default=2000)
    parser.add_argument("--attribute-samples", type=int, default=AttributeSettings().samples)
    parser.add_argument("--top", type=int, default=AttributeSettings().top)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    settings = Settings.from_env()
    backend = open_backend(settings, args.model_set)
    store = LocalStore(settings.store_dir)
    model_set = backend.model_set
    phantoms = model_set.training["data"]
    prep = model_set.preprocessing
    test = render(PHANTOMS[phantoms](seed=EVALUATION_SEED, size=prep.resolution), args.n)
    x = to_model_layout(test.images, prep)
    w = backend.encoder(x)
    target = model_set.default_target
    _, logits = backend.decode_and_classify(w)
    p_rec = target_probability(logits, model_set.classifier.class_index(target))
    oracle = load_or_train_oracle(Path(settings.evaluation_dir), phantoms, prep.resolution)
    probe = ProbeSettings(samples=args.probe_samples)
    lambdas = LambdaGrid().values()
    nuisance = sorted(model_set.nuisance_directions)
    traversals = {}
    for name, removed in (("plain", []), ("orthogonalized", nuisance)):
        direction = load_direction(store, ensure_direction(backend, store, target, probe,
                                                           removed))
        traversals[name] = traverse_many(backend, w, p_rec, direction, lambdas, oracle, None)
    config = AttributeEvaluationSettings(
        attributes=AttributeSettings(top=args.top, samples=args.attribute_samples),
        images=args.n, conditional_images=args.n)
    record = evaluate_attributes(backend, store, oracle, w, p_rec, lambdas, probe,
                                 Path(settings.evaluation_dir), traversals, config)
    record["targets"] = attribute_targets(record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    for row in record["targets"]:
        print(f"{args.model_set}: {row['name']}: {row['measured']} (goal {row['target']}): "
              f"{'met' if row['met'] else 'missed' if row['met'] is False else 'not measured'}")
    for attribute in record["attributes"]["attributes"] if record["attributes"] else []:
        print(f"  attribute {attribute['rank']} {attribute['name']}: moves "
              f"{attribute['factor']} ({attribute['category']}), purity "
              f"{attribute['purity']:.2f}")
    for name, motion in record["directions"].items():
        print(f"  direction {name}: moves {motion['factor']}, purity {motion['purity']:.2f}")
    out = args.out or Path(f"attributes-{args.model_set}.json")
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"{record['seconds']} s; numbers in {out}")
    backend.close()


if __name__ == "__main__":
    main()
