"""Record a model set's domain (what its training images are like) in its manifest.

    python3 scripts/record_domain.py NAME --data knee|histology [--n 2000]
                                     [--modalities CR,DX] [--repository model_repository]

Renders ``--n`` phantoms of the set's training data at its resolution and writes the
manifest's ``domain`` block (:func:`styleprobe.explain.domain.fit_domain`): the DICOM
modalities and photometric interpretations accepted, and the statistic of the pixels
with its bound. The encode stage flags an input outside it ``out_of_domain``.
"""

from __future__ import annotations

import argparse
import json

from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.data.datasets import phantom_set, render
from styleprobe.explain.domain import fit_domain
from styleprobe.modelset import load_model_set, manifest_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--data", required=True, choices=["knee", "histology"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--modalities", default="", help="comma-separated, empty: any")
    parser.add_argument("--photometric", default="MONOCHROME1,MONOCHROME2",
                        help="comma-separated, empty: any")
    parser.add_argument("--repository", default=str(DEFAULT_MODEL_REPOSITORY))
    args = parser.parse_args()
    model_set = load_model_set(args.repository, args.name)
    images = render(phantom_set(args.data, seed=0, size=model_set.preprocessing.resolution),
                    args.n).images
    split = [value for value in args.modalities.split(",") if value]
    photometric = [value for value in args.photometric.split(",") if value]
    domain = fit_domain(images, split, photometric)
    path = manifest_path(args.repository, args.name)
    raw = json.loads(path.read_text())
    raw["domain"] = domain.to_dict()
    path.write_text(json.dumps(raw, indent=2) + "\n")
    print(f"{path}: domain of {args.n} {args.data} phantoms, bound "
          f"{domain.max_distance:.2f}")


if __name__ == "__main__":
    main()
