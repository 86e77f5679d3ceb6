"""Supervised training of the example classifier, with a held-out test AUC."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from styleprobe.data.datasets import DataError, ImageSet
from styleprobe.models.classifier import Classifier
from styleprobe.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    stop_on_signals,
    to_tensor,
)
from styleprobe.training.progress import Progress
from styleprobe.training.runrecord import RunRecord


@dataclass
class ClassifierTrainConfig:
    """``steps`` batches in all, or ``epochs`` passes over the training images when set."""

    steps: int = 300
    epochs: int | None = None
    batch: int = 64
    lr: float = 2e-3
    width: int = 16
    seed: int = 0

    def total_steps(self, batches_per_epoch: int) -> int:
        return self.steps if self.epochs is None else self.epochs * batches_per_epoch


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
                     cfg: ClassifierTrainConfig, device: str = "cpu",
                     checkpoint_every: int = 100,
                     record: RunRecord | None = None) -> dict[str, float]:
    """Train on ``train``, report AUC and accuracy on ``test``; save ``classifier.pt``.

    Step ``k`` takes the batch of epoch ``k // batches_per_epoch`` that a permutation
    seeded by (seed, epoch) gives it, and its flip and dropout from (seed, epoch, k), so an
    unfinished ``classifier.pt`` (saved every ``checkpoint_every`` steps, and on SIGINT or
    SIGTERM: TrainingInterruptedError) resumes exactly where it stopped.
    """
    if train.labels is None or test.labels is None:
        raise DataError("classifier training needs labels (a 'label' column in factors.csv)")
    if len(np.unique(train.labels)) < 2:
        raise DataError("classifier training needs at least two classes in the labels")
    if len(np.unique(test.labels)) < 2:
        raise DataError("the test set needs images of at least two classes to measure AUC; "
                        "add images or pass a --test folder")
    torch.manual_seed(cfg.seed)
    x, y = to_tensor(train.images), torch.from_numpy(train.labels)
    config = {"resolution": train.resolution, "channels": train.channels,
              "num_classes": len(class_names), "width": cfg.width}
    model = Classifier(**config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    batch_size = min(cfg.batch, len(x))  # a small folder still trains
    per_epoch = len(x) // batch_size
    steps = max(cfg.total_steps(per_epoch), 1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    ckpt = out / "classifier.pt"
    step = _resume(ckpt, config, asdict(cfg), model, opt, sched)

    def state(**extra: object) -> dict:
        return {"kind": "classifier", "config": config, "class_names": class_names,
                "train_config": asdict(cfg), "step": step, "steps": steps,
                "model": model.state_dict(), **extra}

    def save() -> Path:
        save_checkpoint(state(opt=opt.state_dict(), sched=sched.state_dict()), ckpt)
        if record is not None:
            record.update(step)
        return ckpt

    with stop_on_signals() as stop, Progress(steps, "classifier", step) as bar:
        model.train()
        while step < steps:
            epoch, k = divmod(step, per_epoch)
            order = np.random.default_rng([cfg.seed, epoch]).permutation(len(x))
            idx = torch.from_numpy(order[k * batch_size:(k + 1) * batch_size])
            batch = x[idx].to(device)
            rng = np.random.default_rng([cfg.seed, epoch, k])
            if rng.random() < 0.5:
                batch = batch.flip(3)  # a horizontal flip keeps the label of a knee or a patch
            torch.manual_seed(int(rng.integers(2**62)))  # dropout
            loss = F.cross_entropy(model(batch), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            bar.update(1, loss=loss.item())
            stop.check(step, save)
            if step % checkpoint_every == 0 and step < steps:
                save()
    model = model.cpu()
    probs = predict_proba(model, to_tensor(test.images))
    metrics = {"test_auc": auc_of(probs, test.labels),
               "test_accuracy": float((probs.argmax(1) == test.labels).mean()),
               "test_size": float(len(test))}
    save_checkpoint(state(metrics=metrics), ckpt)
    if record is not None:
        record.update(step, "finished", metrics)
    return metrics


def unfinished(path: Path) -> dict | None:
    """The state of an unfinished ``classifier.pt`` (None for a finished one or none)."""
    if not path.is_file():
        return None
    state = load_checkpoint(path, kind="classifier")
    return None if "metrics" in state or "opt" not in state else state


def _resume(path: Path, config: dict, train_config: dict, model: Classifier,
            opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler) -> int:
    """The step of an :func:`unfinished` ``classifier.pt`` of the same settings, loaded
    into the model and optimiser; 0 (start over) without one."""
    state = unfinished(path)
    if state is None:
        return 0
    if (state["config"], state["train_config"]) != (config, train_config):
        raise CheckpointError(f"{path} is an unfinished classifier of other settings "
                              f"({state['config']}, {state['train_config']}); "
                              "--restart to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return int(state["step"])


def load_classifier(path: Path) -> tuple[Classifier, dict]:
    state = load_checkpoint(path, kind="classifier")
    if "metrics" not in state:
        raise CheckpointError(f"{path} is unfinished (step {state['step']} of "
                              f"{state['steps']}); run 'styleprobe train classifier' again "
                              "to finish it")
    model = Classifier(**state["config"])
    model.load_state_dict(state["model"])
    return model.eval(), state
