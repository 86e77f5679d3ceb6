"""Pack training runs for export elsewhere: what `styleprobe export` reads, nothing more.

    python3 scripts/pack_runs.py RUNS_DIR OUT_DIR

For each ``RUNS_DIR/<set>/`` writes ``OUT_DIR/<set>-gan.tar.gz`` (the GAN's EMA generator,
the classifier, the logs, the last sample grid) and ``OUT_DIR/<set>-encoders.tar.gz``
(every ``encoder*/encoder.pt``), with optimiser states, the discriminator and the
training history left out: they are only needed to resume training, and leaving them
out keeps each archive small enough to copy off a GPU machine. Unpack with
``tar xzf`` in the repository root.
"""

from __future__ import annotations

import sys
import tarfile
import tempfile
from pathlib import Path

import torch

KEEP = {
    "gan": ("kind", "generator_config", "train_config", "step", "elapsed_s", "G_ema"),
    "encoder": ("kind", "generator_checkpoint", "config", "train_config", "step", "metrics",
                "model"),
}


def slim(path: Path, target: Path) -> None:
    """Copy checkpoint ``path`` to ``target`` with only the keys export reads."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: state[k] for k in KEEP[state["kind"]] if k in state}, target)


def pack(run: Path, out: Path) -> None:
    root = run.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp)
        groups: dict[str, list[Path]] = {"gan": [], "encoders": []}
        for path in sorted(run.rglob("*")):
            if not path.is_file():
                continue
            rel = path.relative_to(root)
            if path.name in ("checkpoint.pt", "encoder.pt"):
                slim(path, staged / rel)
                groups["encoders" if path.name == "encoder.pt" else "gan"].append(rel)
            elif path.suffix in (".log", ".json") or path.name in (
                    "classifier.pt", "samples_latest.png"):
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                (staged / rel).write_bytes(path.read_bytes())
                groups["gan"].append(rel)
        for group, members in groups.items():
            if not members:
                continue
            archive = out / f"{run.name}-{group}.tar.gz"
            with tarfile.open(archive, "w:gz") as tar:
                for rel in members:
                    tar.add(staged / rel, arcname=str(rel))
            print(f"{archive}: {archive.stat().st_size / 2**20:.1f} MiB")


def main() -> None:
    runs, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        pack(run, out)


if __name__ == "__main__":
    main()
