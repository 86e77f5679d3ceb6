"""Add the StyleSpace entry points to an exported model set, without retraining.

    python3 scripts/stylespace_from_model_set.py NAME [NAME ...] [--repository model_repository]

Rebuilds the generator from the set's own `mapping` and `synthesis` TorchScript files,
checks that `stylesynthesis(styles(w))` reproduces `synthesis(w)`, writes
`<set>-styles` (w -> styles) and `<set>-stylesynthesis` (styles -> image) beside them
with their Triton configurations, and rewrites the manifest with the two entries and the
StyleSpace layout. The existing model files are not touched (their hashes stay). A new
`styleprobe export` writes both entry points itself.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from styleprobe.training.export import add_stylespace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", help="model sets, e.g. knee-oa histology-tumour")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    args = parser.parse_args()
    for name in args.names:
        result = add_stylespace(args.repository, name)
        channels = sum(layer.channels for layer in result.model_set.style_layers)
        print(f"{name}: {channels} style channels in {len(result.model_set.style_layers)} "
              f"layers; parity {result.parity}")


if __name__ == "__main__":
    main()
