"""Rebuild the training checkpoints of an exported model set from its TorchScript files.

    python3 scripts/checkpoints_from_model_set.py NAME [--repository model_repository]
                                                     [--runs runs]

Training runs (runs/) are not kept, but every network of a model set is in the model
repository with its configuration in the manifest. This writes what
`styleprobe export` and `styleprobe train encoder` read, as `scripts/pack_runs.py` packs
them: runs/NAME/gan/checkpoint.pt (the generator, without discriminator or optimisers),
runs/NAME/encoder/encoder.pt and runs/NAME/classifier/classifier.pt. One network can then
be fine-tuned (the encoder resumes from its step) and the set exported again with
`EXPORT_ONLY=1 scripts/build_model_sets.sh`. Each rebuilt network is checked against its
TorchScript file.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, GeneratorConfig
from styleprobe.modelset import load_model_set
from styleprobe.training.checkpoint import save_checkpoint
from styleprobe.training.encoder import decode

TOLERANCE = 1e-5


def scripted(repository: Path, path: str) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(repository / path), map_location="cpu").eval()


def check(name: str, module: Callable[[torch.Tensor], torch.Tensor],
          traced: torch.jit.ScriptModule, example: torch.Tensor) -> None:
    with torch.no_grad():
        diff = (module(example) - traced(example)).abs().max().item()
    if diff > TOLERANCE:
        sys.exit(f"the rebuilt {name} differs from its TorchScript file by {diff:.2e}")


def rebuild(name: str, repository: Path, runs: Path) -> None:
    model_set = load_model_set(repository, name, verify=True)
    training = model_set.training
    files = {kind: scripted(repository, entry.path) for kind, entry in model_set.models.items()}

    gen_cfg = GeneratorConfig(**training["generator"]["config"])
    G = Generator(gen_cfg)
    G.load_state_dict({**files["mapping"].state_dict(), **files["synthesis"].state_dict()})
    G.eval().requires_grad_(False)
    z = torch.randn(3, gen_cfg.z_dim, generator=torch.Generator().manual_seed(0))
    check("mapping", G.mapping, files["mapping"], z)
    check("synthesis", lambda w: decode(G, w), files["synthesis"], G.mapping(z))
    gan_checkpoint = runs / name / "gan" / "checkpoint.pt"
    save_checkpoint({"kind": "gan", "generator_config": gen_cfg.to_dict(),
                     "train_config": {"batch": training["generator"]["batch"]},
                     "step": training["generator"]["steps"], "G_ema": G.state_dict()},
                    gan_checkpoint)

    size = (gen_cfg.channels, gen_cfg.resolution, gen_cfg.resolution)
    image = torch.rand(3, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    encoder_state = files["encoder"].state_dict()
    width = encoder_state["features.0.weight"].shape[0]
    E = Encoder(gen_cfg.resolution, gen_cfg.channels, gen_cfg.w_dim, width).eval()
    E.load_state_dict(encoder_state)
    check("encoder", E, files["encoder"], image)
    save_checkpoint({"kind": "encoder", "generator_checkpoint": str(gan_checkpoint),
                     "config": {"resolution": gen_cfg.resolution, "channels": gen_cfg.channels,
                                "w_dim": gen_cfg.w_dim, "width": width},
                     "step": training["encoder"]["steps"],
                     "metrics": training["encoder"].get("metrics", {}),
                     "model": E.state_dict()}, runs / name / "encoder" / "encoder.pt")

    clf = training["classifier"]
    C = Classifier(**clf["config"]).eval()
    C.load_state_dict(files["classifier"].state_dict())
    check("classifier", C, files["classifier"], image)
    save_checkpoint({"kind": "classifier", "config": clf["config"],
                     "class_names": list(model_set.classifier.class_names),
                     "train_config": clf["train_config"], "metrics": clf["metrics"],
                     "model": C.state_dict()}, runs / name / "classifier" / "classifier.pt")
    print(f"{name}: checkpoints in {runs / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="model set, e.g. knee-oa")
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    args = parser.parse_args()
    rebuild(args.name, args.repository, args.runs)


if __name__ == "__main__":
    main()
