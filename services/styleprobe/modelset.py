"""Model sets: which generator, encoder and classifier belong together, and how to feed them.

A model set is described by a manifest, ``model_repository/<name>.modelset.json``
(a file, so Triton, which treats every folder of the repository as a model, ignores
it). Each of its four models lives in Triton's layout,
``model_repository/<triton name>/<version>/model.pt``, as TorchScript with this
contract (float32, batch first, images NCHW in ``[-1, 1]``):

============  ===================  ====================
model         input                output
============  ===================  ====================
mapping       ``z [N, z_dim]``     ``w [N, w_dim]``
synthesis     ``w [N, w_dim]``     ``image [N, C, R, R]``
encoder       ``image [N, C, R, R]``  ``w [N, w_dim]``
classifier    ``image [N, C, R, R]``  ``logits [N, K]``
============  ===================  ====================
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_KINDS = ("mapping", "synthesis", "encoder", "classifier")
# Optional StyleSpace entry points (attribute discovery): w -> styles, styles -> image.
STYLESPACE_KINDS = ("styles", "stylesynthesis")
MANIFEST_SUFFIX = ".modelset.json"
SCHEMA_VERSION = 1
# Generated samples a set's generator coverage of its classes is measured on (its manifest's
# metrics.generator_coverage, written by `styleprobe model-set add-classifier`).
COVERAGE_SAMPLES = 2000


class ModelSetError(ValueError):
    """A model set is missing, malformed or inconsistent."""


@dataclass
class TensorSpec:
    """One named tensor of a model's signature; ``dims`` exclude the batch dimension."""

    name: str
    dims: list[int]
    dtype: str = "FP32"


@dataclass
class ModelEntry:
    """One exported TorchScript model of a set."""

    triton_name: str
    version: int
    sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def path(self) -> str:
        """Path of ``model.pt`` relative to the model repository."""
        return f"{self.triton_name}/{self.version}/model.pt"

    @property
    def version_id(self) -> str:
        """What identifies this exact model: name, version and content hash."""
        return f"{self.triton_name}:{self.version}:{self.sha256[:12]}"


@dataclass
class Preprocessing:
    """How any input image is turned into the models' input tensor."""

    resolution: int
    channels: int
    value_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    layout: str = "NCHW"


@dataclass
class ClassifierInfo:
    """Class names and how logits become probabilities."""

    class_names: list[str]
    activation: str = "softmax"  # softmax over K >= 2 logits
    threshold: float = 0.5

    def class_index(self, target: str) -> int:
        if target not in self.class_names:
            raise ModelSetError(f"unknown target {target!r}; this classifier's classes are "
                                f"{', '.join(self.class_names)}")
        return self.class_names.index(target)


@dataclass
class QualityGate:
    """Beyond these, an explanation is flagged ``unreliable``."""

    max_pixel_mse: float
    require_agreement: bool = True
    max_probability_shift: float = 0.3  # |f(G(E(x))) - f(x)|, whatever the side


@dataclass
class StyleLayer:
    """One layer of the generator's StyleSpace: its name (``b<res>.conv0|conv1|torgb``)
    and how many style channels it reads."""

    name: str
    channels: int


@dataclass
class ModelSet:
    """A model-set manifest: models, preprocessing, latent space, classes, provenance."""

    name: str
    description: str
    preprocessing: Preprocessing
    classifier: ClassifierInfo
    models: dict[str, ModelEntry]
    z_dim: int
    w_dim: int
    w_avg: list[float]
    quality: QualityGate
    default_target: str
    nuisance_directions: dict[str, list[float]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    style_layers: list[StyleLayer] = field(default_factory=list)  # with STYLESPACE_KINDS
    # what the training images were like (styleprobe.explain.domain); empty: not recorded
    domain: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [k for k in MODEL_KINDS if k not in self.models]
        if missing:
            raise ModelSetError(f"model set {self.name!r} lacks model(s): {', '.join(missing)}")
        if len(self.w_avg) != self.w_dim:
            raise ModelSetError(f"w_avg has {len(self.w_avg)} values, w_dim is {self.w_dim}")
        for name, direction in self.nuisance_directions.items():
            if len(direction) != self.w_dim:
                raise ModelSetError(f"nuisance direction {name!r} is not {self.w_dim}-d")
        self.classifier.class_index(self.default_target)

    @property
    def has_stylespace(self) -> bool:
        """Whether the set exports its StyleSpace entry points (``styles``,
        ``stylesynthesis``) with their layout."""
        return bool(self.style_layers) and all(k in self.models for k in STYLESPACE_KINDS)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        p = self.preprocessing
        return (p.channels, p.resolution, p.resolution)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSet:
        try:
            if raw.get("schema_version") != SCHEMA_VERSION:
                raise ModelSetError(f"unsupported schema_version {raw.get('schema_version')}")
            models = {
                kind: ModelEntry(
                    triton_name=m["triton_name"], version=int(m["version"]),
                    sha256=m["sha256"],
                    inputs=[TensorSpec(**t) for t in m["inputs"]],
                    outputs=[TensorSpec(**t) for t in m["outputs"]],
                )
                for kind, m in raw["models"].items()
            }
            return cls(
                name=raw["name"], description=raw["description"],
                preprocessing=Preprocessing(**raw["preprocessing"]),
                classifier=ClassifierInfo(**raw["classifier"]),
                models=models, z_dim=int(raw["z_dim"]), w_dim=int(raw["w_dim"]),
                w_avg=[float(x) for x in raw["w_avg"]],
                quality=QualityGate(**raw["quality"]),
                default_target=raw["default_target"],
                nuisance_directions=raw.get("nuisance_directions", {}),
                training=raw.get("training", {}), metrics=raw.get("metrics", {}),
                domain=raw.get("domain", {}),
                style_layers=[StyleLayer(**layer) for layer in raw.get("style_layers", [])],
            )
        except (KeyError, TypeError) as exc:
            raise ModelSetError(f"malformed model-set manifest: {exc!r}") from exc


def manifest_path(repository: Path, name: str) -> Path:
    return Path(repository) / f"{name}{MANIFEST_SUFFIX}"


def load_model_set(repository: Path, name: str, verify: bool = False) -> ModelSet:
    """Load and validate ``<repository>/<name>.modelset.json``.

    With ``verify``, also check that every model file exists and matches its hash.
    """
    path = manifest_path(repository, name)
    if not path.is_file():
        known = ", ".join(list_model_sets(repository)) or "none"
        raise ModelSetError(f"unknown model set {name!r} (known: {known})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelSetError(f"{path} is not valid JSON: {exc}") from exc
    model_set = ModelSet.from_dict(raw)
    if verify:
        for kind, entry in model_set.models.items():
            file = Path(repository) / entry.path
            if not file.is_file():
                raise ModelSetError(f"{kind} model file {file} is missing")
            if sha256_file(file) != entry.sha256:
                raise ModelSetError(f"{kind} model file {file} does not match its sha256")
    return model_set


def list_model_sets(repository: Path) -> list[str]:
    """Names of the model sets whose manifests lie in ``repository``."""
    return sorted(p.name[: -len(MANIFEST_SUFFIX)]
                  for p in Path(repository).glob(f"*{MANIFEST_SUFFIX}"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
