"""Does another torch (libtorch) read and run the TorchScript files this project exports?

Production Triton's PyTorch backend is the libtorch of its NGC image, older than the
torch that writes the models (``deploy/docker/triton-pairing.json``). This script runs
every TorchScript model of a model repository on fixed inputs and saves the outputs;
run it under the pinned torch and under a torch of the image's libtorch version, then
compare: the files load, and the outputs agree.

    .venv/bin/python scripts/check_libtorch.py run model_repository pinned.npz
    /tmp/venv25/bin/python scripts/check_libtorch.py run model_repository other.npz
    .venv/bin/python scripts/check_libtorch.py compare pinned.npz other.npz

It needs only torch and numpy (no StyleProbe import), so it runs in a bare virtual
environment with the other torch (``pip install torch==2.5.1 numpy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

BATCH = 4
SEED = 20261206


def run(repository: Path, out: Path) -> None:
    """Load each set's TorchScript models, run them on fixed inputs, save the outputs."""
    outputs: dict[str, Any] = {}  # arrays by model/output name
    for manifest in sorted(repository.glob("*.modelset.json")):
        for entry in json.loads(manifest.read_text())["models"].values():
            path = repository / entry["triton_name"] / str(entry["version"]) / "model.pt"
            module = torch.jit.load(str(path), map_location="cpu").eval()
            rng = np.random.default_rng(SEED)
            inputs = [torch.from_numpy(rng.uniform(-1, 1, (BATCH, *t["dims"]))
                                       .astype(np.float32)) for t in entry["inputs"]]
            with torch.no_grad():
                result = module(*inputs)
            for spec, tensor in zip(entry["outputs"], _as_tuple(result), strict=True):
                outputs[f"{entry['triton_name']}/{spec['name']}"] = tensor.numpy()
    outputs["__torch__"] = np.array(torch.__version__)
    with out.open("wb") as file:
        np.savez(file, **outputs)
    models = {key.split("/")[0] for key in outputs} - {"__torch__"}
    print(f"torch {torch.__version__}: {len(outputs) - 1} outputs of {len(models)} models "
          f"-> {out}")


def _as_tuple(result: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return result if isinstance(result, tuple) else (result,)


def compare(first: Path, second: Path, tolerance: float) -> int:
    """0 if both hold the same outputs within ``tolerance`` (max absolute difference)."""
    a, b = np.load(first), np.load(second)
    names = sorted(set(a.files) - {"__torch__"})
    if names != sorted(set(b.files) - {"__torch__"}):
        print("the two runs hold different models", file=sys.stderr)
        return 1
    worst = max(float(np.abs(a[name] - b[name]).max()) for name in names)
    print(json.dumps({"torch": [str(a["__torch__"]), str(b["__torch__"])],
                      "outputs": len(names), "max_abs_diff": worst}))
    return 0 if worst <= tolerance else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    run_args = actions.add_parser("run")
    run_args.add_argument("repository", type=Path)
    run_args.add_argument("out", type=Path)
    compare_args = actions.add_parser("compare")
    compare_args.add_argument("first", type=Path)
    compare_args.add_argument("second", type=Path)
    compare_args.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.action == "run":
        run(args.repository, args.out)
        return 0
    return compare(args.first, args.second, args.tolerance)


if __name__ == "__main__":
    sys.exit(main())
