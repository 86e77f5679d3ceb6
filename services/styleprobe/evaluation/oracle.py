"""The oracle: a small CNN that reads every phantom factor, disease and nuisance, from an image.

Phantoms carry their factor values, so a network trained to regress them from the image
measures what a traversal really changed in a frame. It is trained on phantoms of its own
seed (never the evaluation's), at the model set's resolution, on standardised targets;
its held-out R² per factor says how far each reading can be trusted. The trained oracle
is cached as ``oracle-<phantoms>-<R>x<C>-<config hash>.pt`` and reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import r2_score

from styleprobe.data import histology, knee
from styleprobe.data.datasets import PHANTOMS, ImageSet, render
from styleprobe.models.classifier import Classifier
from styleprobe.training.checkpoint import load_checkpoint, save_checkpoint, to_tensor

log = logging.getLogger(__name__)
ORACLE_SEED = 3_000_017  # phantoms no model of a bundled set was trained or tested on
MARKER_SHARE = 0.3  # share of oracle training images with the corner marker
DISEASE_SCORE = "disease_score"  # the composite the label is a threshold of
_SCORES = {"knee": knee.disease_score, "histology": histology.tumour_score}
# the composite score at which the label changes (knee: KL grade 2 starts here)
LABEL_THRESHOLDS = {"knee": knee.GRADE_THRESHOLDS[1], "histology": histology.TUMOUR_THRESHOLD}


@dataclass(frozen=True)
class OracleConfig:
    """How the oracle is trained (part of its cache key)."""

    train_samples: int = 6000
    test_samples: int = 1000
    epochs: int = 8
    batch: int = 64
    lr: float = 2e-3
    width: int = 24
    seed: int = 0


def phantom_factors(phantoms: str) -> list[str]:
    """What an oracle reads for a phantom set: its disease factors, its nuisance factors,
    and their composite :data:`DISEASE_SCORE`."""
    cls = PHANTOMS[phantoms]
    return [*cls.disease_factors, *cls.nuisance_factors, DISEASE_SCORE]


def oracle_phantoms(phantoms: str, size: int, seed: int, n: int) -> ImageSet:
    """Phantoms for the oracle: the marker on :data:`MARKER_SHARE` of them, independent of
    the label, so that it can be read wherever it appears."""
    return render(PHANTOMS[phantoms](seed=seed, size=size, marker_share=MARKER_SHARE), n)


def composite_score(phantoms: str, factors: dict[str, np.ndarray]) -> np.ndarray:
    """The phantom set's disease score (what its label thresholds), row by row."""
    score = _SCORES[phantoms]
    names = PHANTOMS[phantoms].disease_factors
    n = len(factors[names[0]])
    return np.array([score({k: float(factors[k][i]) for k in names}) for i in range(n)])


class Oracle:
    """Reads the factors of images: ``read`` in standard units (per factor, the spread of
    the training phantoms), ``read_factors`` in the factors' own units; ``factors`` names
    the columns, ``r2`` is each one's R² on held-out phantoms."""

    def __init__(self, model: Classifier, phantoms: str, factors: list[str], mean: np.ndarray,
                 std: np.ndarray, r2: dict[str, float]) -> None:
        self.model, self.phantoms, self.factors = model.eval(), phantoms, factors
        self.mean, self.std, self.r2 = mean, std, r2

    def read(self, images: np.ndarray, batch: int = 256) -> np.ndarray:
        """Standardised factor readings ``(N, F)`` of NCHW images in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
        with torch.no_grad():
            out = [self.model(x[i:i + batch]) for i in range(0, len(x), batch)]
        return torch.cat(out).numpy().astype(np.float64)

    def read_factors(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Factor values of NCHW images in [-1, 1], by name."""
        values = self.read(images) * self.std + self.mean
        return {name: values[:, i] for i, name in enumerate(self.factors)}


def load_or_train_oracle(cache_dir: Path, phantoms: str, resolution: int,
                         config: OracleConfig | None = None) -> Oracle:
    """The cached oracle for these phantoms and size, trained (and cached) if absent."""
    config = config or OracleConfig()
    identity = json.dumps({"phantoms": phantoms, "resolution": resolution, **asdict(config)},
                          sort_keys=True)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:10]
    channels = PHANTOMS[phantoms].channels
    path = Path(cache_dir) / f"oracle-{phantoms}-{resolution}x{channels}-{digest}.pt"
    if not path.is_file():
        log.info("training oracle", extra={"path": str(path)})
        save_checkpoint(train_oracle(phantoms, resolution, config), path)
    state = load_checkpoint(path, kind="oracle")
    model = Classifier(**state["network"])
    model.load_state_dict(state["model"])
    return Oracle(model, state["phantoms"], state["factors"], np.asarray(state["mean"]),
                  np.asarray(state["std"]), state["r2"])


def train_oracle(phantoms: str, resolution: int, config: OracleConfig) -> dict:
    """Train an oracle; its checkpoint state, with the held-out R² of every factor."""
    factors = phantom_factors(phantoms)
    train = oracle_phantoms(phantoms, resolution, ORACLE_SEED + config.seed,
                            config.train_samples)
    test = oracle_phantoms(phantoms, resolution, ORACLE_SEED + config.seed + 1,
                           config.test_samples)
    y = np.stack([_truth(phantoms, train)[k] for k in factors], axis=1).astype(np.float64)
    mean, std = y.mean(axis=0), np.maximum(y.std(axis=0), 1e-6)
    targets = torch.from_numpy(((y - mean) / std).astype(np.float32))
    x = to_tensor(train.images)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    network = {"resolution": resolution, "channels": train.channels,
               "num_classes": len(factors), "width": config.width}
    model = Classifier(**network)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    batch = min(config.batch, len(x))
    steps = max(1, config.epochs * (len(x) // batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    for _ in range(config.epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch + 1, batch):
            idx = torch.from_numpy(order[i:i + batch])
            loss = F.mse_loss(model(x[idx]), targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    oracle = Oracle(model, phantoms, factors, mean, std, {})
    read, truth = oracle.read_factors(to_tensor(test.images).numpy()), _truth(phantoms, test)
    r2 = {k: float(r2_score(truth[k], read[k])) for k in factors}
    log.info("oracle trained", extra={"r2": r2})
    return {"kind": "oracle", "phantoms": phantoms, "factors": factors, "network": network,
            "mean": mean.tolist(), "std": std.tolist(), "r2": r2, "config": asdict(config),
            "model": model.state_dict()}


def _truth(phantoms: str, data: ImageSet) -> dict[str, np.ndarray]:
    return {**data.factors, DISEASE_SCORE: composite_score(phantoms, data.factors)}
