"""TorchScript export: Triton layout, manifest validation, parity with eager, hashes."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from styleprobe.models.classifier import Classifier
from styleprobe.models.encoder import Encoder
from styleprobe.models.stylegan2 import Generator, GeneratorConfig
from styleprobe.modelset import (
    MODEL_KINDS,
    STYLESPACE_KINDS,
    ModelSetError,
    list_model_sets,
    load_model_set,
)
from styleprobe.training.export import (
    PARITY_TOLERANCE,
    ExportResult,
    MappingModule,
    SynthesisModule,
    export_model_set,
)

torch.set_num_threads(1)
NAME = "tiny-rgb"
CLASSES = ["normal", "tumour"]


@dataclass
class Exported:
    repository: Path
    result: ExportResult
    eager: dict[str, nn.Module]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """An untrained 8x8 RGB set, exported once, with the eager modules it came from."""
    torch.manual_seed(0)
    cfg = GeneratorConfig(resolution=8, channels=3, z_dim=16, w_dim=16, mapping_layers=2,
                          channel_base=64, channel_max=16, channel_min=8)
    G = Generator(cfg).eval()
    encoder = Encoder(8, 3, 16, width=8, w_avg=G.mapping.w_avg).eval()
    classifier = Classifier(8, 3, len(CLASSES), width=8).eval()
    repository = tmp_path_factory.mktemp("export")
    result = export_model_set(
        name=NAME, G=G, encoder=encoder, classifier=classifier, class_names=CLASSES,
        default_target="tumour", repository=repository, description="tiny", max_pixel_mse=0.05,
        training={"iterations": 0}, metrics={"test_auc": 0.5},
    )
    eager = {"mapping": MappingModule(G), "synthesis": SynthesisModule(G),
             "encoder": encoder, "classifier": classifier}
    return Exported(repository, result, eager)


def test_files_lie_in_triton_layout(exported: Exported) -> None:
    repo = exported.repository
    for kind in MODEL_KINDS:
        assert (repo / f"{NAME}-{kind}" / "1" / "model.pt").is_file()
    assert (repo / f"{NAME}.modelset.json").is_file()
    assert list_model_sets(repo) == [NAME]
    assert not list(repo.rglob("*.tmp"))


def test_manifest_loads_validates_and_matches_the_export(exported: Exported) -> None:
    model_set = load_model_set(exported.repository, NAME, verify=True)
    assert model_set == exported.result.model_set
    assert model_set.image_shape == (3, 8, 8)
    assert model_set.preprocessing.value_range == [-1.0, 1.0]
    assert model_set.classifier.class_names == CLASSES
    assert model_set.classifier.class_index("tumour") == 1
    assert len(model_set.w_avg) == model_set.w_dim == 16
    assert model_set.training == {"iterations": 0} and model_set.metrics == {"test_auc": 0.5}
    signature = {kind: ([t.name for t in e.inputs], [t.name for t in e.outputs])
                 for kind, e in model_set.models.items()}
    assert signature == {"mapping": (["z"], ["w"]), "synthesis": (["w"], ["image"]),
                         "encoder": (["image"], ["w"]), "classifier": (["image"], ["logits"]),
                         "styles": (["w"], ["styles"]),
                         "stylesynthesis": (["styles"], ["image"])}
    assert model_set.has_stylespace
    assert model_set.models["styles"].outputs[0].dims == [
        sum(layer.channels for layer in model_set.style_layers)]
    assert model_set.models["synthesis"].outputs[0].dims == [3, 8, 8]
    assert model_set.models["classifier"].outputs[0].dims == [2]


def test_reported_parity_is_within_tolerance(exported: Exported) -> None:
    assert set(exported.result.parity) == {*MODEL_KINDS, *STYLESPACE_KINDS}
    assert all(0 <= d < PARITY_TOLERANCE for d in exported.result.parity.values())


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_torchscript_files_match_eager(exported: Exported, kind: str, batch: int) -> None:
    model_set = exported.result.model_set
    entry = model_set.models[kind]
    scripted = torch.jit.load(str(exported.repository / entry.path))
    dims = entry.inputs[0].dims
    x = torch.rand(batch, *dims, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    if kind == "synthesis":
        x = x + torch.tensor(model_set.w_avg)
    with torch.no_grad():
        got, want = scripted(x), exported.eager[kind](x)
    assert got.shape == (batch, *entry.outputs[0].dims)
    assert (got - want).abs().max().item() < PARITY_TOLERANCE
    if kind == "synthesis":
        assert got.min() >= -1 and got.max() <= 1


def copy_repository(exported: Exported, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported.repository, tmp_path / "repo"))


def rewrite_manifest(repo: Path, change: Any) -> None:
    path = repo / f"{NAME}.modelset.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def drop(*keys: str) -> Any:
    def change(raw: dict) -> None:
        target = raw
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


def put(value: Any, *keys: str) -> Any:
    def change(raw: dict) -> None:
        target = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


@pytest.mark.parametrize(("change", "message"), [
    (drop("models"), "malformed"),
    (drop("w_avg"), "malformed"),
    (drop("preprocessing", "resolution"), "malformed"),
    (drop("models", "encoder"), "lacks model"),
    (drop("models", "classifier", "sha256"), "malformed"),
    (put({"name": "z", "dims": [16], "colour": "red"}, "models", "mapping", "inputs", 0),
     "malformed"),
    (put([0.0, 1.0], "w_avg"), "w_avg has 2 values"),
    (put(99, "schema_version"), "schema_version"),
    (put("cancer", "default_target"), "unknown target"),
    (put({"exposure": [1.0]}, "nuisance_directions"), "nuisance direction"),
])
def test_corrupt_manifest_raises_model_set_error(exported: Exported, tmp_path: Path,
                                                 change: Any, message: str) -> None:
    repo = copy_repository(exported, tmp_path)
    rewrite_manifest(repo, change)
    with pytest.raises(ModelSetError, match=message):
        load_model_set(repo, NAME)


def test_manifest_that_is_not_json_raises(exported: Exported, tmp_path: Path) -> None:
    repo = copy_repository(exported, tmp_path)
    (repo / f"{NAME}.modelset.json").write_text("{ not json")
    with pytest.raises(ModelSetError, match="not valid JSON"):
        load_model_set(repo, NAME)


def test_unknown_model_set_names_the_known_ones(exported: Exported) -> None:
    with pytest.raises(ModelSetError, match=f"unknown model set 'knee'.*{NAME}"):
        load_model_set(exported.repository, "knee")


def test_changed_model_file_fails_verification(exported: Exported, tmp_path: Path) -> None:
    repo = copy_repository(exported, tmp_path)
    path = repo / exported.result.model_set.models["classifier"].path
    path.write_bytes(path.read_bytes() + b"\0")
    load_model_set(repo, NAME)  # without verify, hashes are not read
    with pytest.raises(ModelSetError, match=r"classifier model file .* does not match"):
        load_model_set(repo, NAME, verify=True)


def test_missing_model_file_fails_verification(exported: Exported, tmp_path: Path) -> None:
    repo = copy_repository(exported, tmp_path)
    (repo / exported.result.model_set.models["encoder"].path).unlink()
    with pytest.raises(ModelSetError, match=r"encoder model file .* is missing"):
        load_model_set(repo, NAME, verify=True)
