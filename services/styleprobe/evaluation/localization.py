"""Localization against the ground-truth mask: the traversal's difference map and Grad-CAM.

A saliency map (R, R) is scored against a phantom's mask of where the disease factors
live by the pixel AUROC (does the map rank mask pixels above the rest?) and the pointing
game (does its maximum fall inside the mask?).

Grad-CAM (Selvaraju et al. 2017) is captum's ``LayerGradCam`` on the last convolution of
the eager classifier (captum needs no torchvision, whose PyPI wheels do not load beside
the CPU build of torch this project pins). The bundled classifier's eager module is
rebuilt from its TorchScript file's weights (:func:`eager_classifier`); a classifier of
another architecture gets no Grad-CAM.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerAttribution, LayerGradCam
from sklearn.metrics import roc_auc_score
from torch import nn

from styleprobe.models.classifier import Classifier
from styleprobe.modelset import ModelSet

log = logging.getLogger(__name__)


def eager_classifier(repository: Path, model_set: ModelSet) -> Classifier | None:
    """The model set's classifier as an eager :class:`Classifier` with the TorchScript
    file's weights; None when the file is not that architecture."""
    entry = model_set.models["classifier"]
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript loading
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(Path(repository) / entry.path), map_location="cpu")
    state = scripted.state_dict()
    first = state.get("features.0.weight")
    if first is None:
        log.info("classifier is not the bundled architecture: no Grad-CAM")
        return None
    channels, resolution = model_set.image_shape[:2]
    model = Classifier(resolution, channels, len(model_set.classifier.class_names),
                       width=int(first.shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        log.info("classifier weights do not fit the bundled architecture: no Grad-CAM")
        return None
    return model.eval()


def last_convolution(model: nn.Module) -> nn.Conv2d:
    """The last ``Conv2d`` of a model, Grad-CAM's usual target layer."""
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise ValueError("the model has no convolution for Grad-CAM")
    return convolutions[-1]


def gradcam(model: nn.Module, images: np.ndarray, class_index: int,
            layer: nn.Module | None = None, batch: int = 64) -> np.ndarray:
    """Grad-CAM maps (N, R, R) in [0, 1] of ``class_index`` for NCHW images in [-1, 1]:
    captum's ``LayerGradCam`` (the layer's activations weighted by the spatial mean of the
    class logit's gradient, rectified), upsampled bilinearly to the image and scaled to a
    maximum of 1."""
    model.eval()
    cam = LayerGradCam(model, layer or last_convolution(model))
    maps = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start:start + batch], np.float32))
        attribution = cam.attribute(x, target=class_index, relu_attributions=True)
        attribution = LayerAttribution.interpolate(attribution, tuple(x.shape[-2:]), "bilinear")
        maps.append(attribution[:, 0].detach().numpy())
    cams = np.concatenate(maps).astype(np.float64)
    peak = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)


def difference_magnitude(frames: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """``|frame - reconstruction|`` averaged over channels: (N, R, R) from NCHW images."""
    return np.abs(np.asarray(frames, np.float64) - np.asarray(reconstructions, np.float64)).mean(
        axis=1)


def pixel_auroc(saliency: np.ndarray, mask: np.ndarray) -> float | None:
    """AUROC of the saliency values for mask pixels against the rest; None when the mask
    is empty or full."""
    inside = np.asarray(mask).ravel() > 0
    if inside.all() or not inside.any():
        return None
    return float(roc_auc_score(inside, np.asarray(saliency).ravel()))


def pointing_hit(saliency: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the saliency maximum (first of ties) lies inside the mask."""
    return bool(np.asarray(mask).ravel()[int(np.argmax(saliency))] > 0)


def localization_scores(maps: np.ndarray, masks: np.ndarray) -> dict[str, float | int]:
    """Mean and median pixel AUROC and the pointing-game hit rate of maps (N, R, R)."""
    aurocs = [a for a in (pixel_auroc(m, k) for m, k in zip(maps, masks, strict=True))
              if a is not None]
    hits = [pointing_hit(m, k) for m, k in zip(maps, masks, strict=True) if np.any(k)]
    return {
        "images": len(aurocs),
        "auroc_mean": float(np.mean(aurocs)) if aurocs else float("nan"),
        "auroc_median": float(np.median(aurocs)) if aurocs else float("nan"),
        "pointing_game": float(np.mean(hits)) if hits else float("nan"),
    }


def mass_inside(maps: np.ndarray, region: np.ndarray) -> float:
    """The mean share of each map's total saliency that falls inside ``region`` (R, R)."""
    inside = np.asarray(maps)[:, np.asarray(region) > 0].sum(axis=1)
    total = np.asarray(maps).reshape(len(maps), -1).sum(axis=1)
    return float(np.mean(np.divide(inside, total, out=np.zeros_like(inside),
                                   where=total > 0)))
