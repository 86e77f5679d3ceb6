"""Supervised training of the example classifier, with a held-out test AUC."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from styleprobe.data.datasets import DataError, ImageSet
from styleprobe.models.classifier import Classifier
from styleprobe.training.checkpoint import load_checkpoint, save_checkpoint, to_tensor


@dataclass
class ClassifierTrainConfig:
    epochs: int = 8
    batch: int = 64
    lr: float = 2e-3
    width: int = 16
    seed: int = 0


def predict_proba(model: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    """Softmax probabilities (N, K) of a classifier on NCHW images in [-1, 1]."""
    model.eval()
    with torch.no_grad():
        chunks = [F.softmax(model(images[i:i + batch]), dim=1)
                  for i in range(0, len(images), batch)]
    return torch.cat(chunks).numpy()


def auc_of(probs: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    return float(roc_auc_score(labels == positive, probs[:, positive]))


def train_classifier(train: ImageSet, test: ImageSet, class_names: list[str], out: Path,
                     cfg: ClassifierTrainConfig, device: str = "cpu") -> dict[str, float]:
    """Train on ``train`` (10% kept for validation), report AUC on ``test``; save."""
    if train.labels is None or test.labels is None:
        raise DataError("classifier training needs labels (a 'label' column in factors.csv)")
    if len(np.unique(train.labels)) < 2:
        raise DataError("classifier training needs at least two classes in the labels")
    if len(np.unique(test.labels)) < 2:
        raise DataError("the test set needs images of at least two classes to measure AUC; "
                        "add images or pass a --test folder")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    x, y = to_tensor(train.images), torch.from_numpy(train.labels)
    model = Classifier(train.resolution, train.channels, len(class_names), cfg.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    batch_size = min(cfg.batch, len(x))  # a small folder still trains
    steps = cfg.epochs * (len(x) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 1))
    bar = tqdm(total=steps, desc="classifier", unit="it")
    for _ in range(cfg.epochs):
        model.train()
        order = rng.permutation(len(x))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = torch.from_numpy(order[i:i + batch_size])
            batch = x[idx].to(device)
            if rng.random() < 0.5:  # a horizontal flip keeps the label of a knee or a patch
                batch = batch.flip(3)
            loss = F.cross_entropy(model(batch), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model = model.cpu()
    probs = predict_proba(model, to_tensor(test.images))
    metrics = {"test_auc": auc_of(probs, test.labels),
               "test_accuracy": float((probs.argmax(1) == test.labels).mean()),
               "test_size": float(len(test))}
    save_checkpoint({
        "kind": "classifier",
        "config": {"resolution": train.resolution, "channels": train.channels,
                   "num_classes": len(class_names), "width": cfg.width},
        "class_names": class_names, "train_config": asdict(cfg), "metrics": metrics,
        "model": model.state_dict(),
    }, out / "classifier.pt")
    return metrics


def load_classifier(path: Path) -> tuple[Classifier, dict]:
    state = load_checkpoint(path, kind="classifier")
    model = Classifier(**state["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state
