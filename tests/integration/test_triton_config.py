"""Every ``config.pbtxt`` parses with Triton's own protobuf schema and matches its TorchScript."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format

import required
from styleprobe.cli import run
from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.modelset import (
    MODEL_KINDS,
    STYLESPACE_KINDS,
    ModelSet,
    ModelSetError,
    list_model_sets,
    load_model_set,
)
from styleprobe.serving.cpu_repository import build_cpu_repository
from styleprobe.serving.triton_config import MAX_BATCH_SIZE, decode_ensemble_name

pb = required.module("tritonclient.grpc.model_config_pb2")
BUNDLED_SETS = (list_model_sets(DEFAULT_MODEL_REPOSITORY) if DEFAULT_MODEL_REPOSITORY.is_dir()
                else [])


def parse(model_dir: Path):  # -> model_config_pb2.ModelConfig
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())


def dims(tensor) -> list[int]:
    return list(tensor.dims)


def check_against_torchscript(repository: Path, model_set: ModelSet) -> None:
    """Names, types and dims of each model's configuration against its TorchScript file
    (the StyleSpace entry points too, where the set has them)."""
    for kind in (*MODEL_KINDS, *(STYLESPACE_KINDS if model_set.has_stylespace else ())):
        entry = model_set.models[kind]
        config = parse(repository / entry.triton_name)
        assert config.name == entry.triton_name
        assert list(config.version_policy.specific.versions) == [entry.version]
        assert config.max_batch_size == MAX_BATCH_SIZE
        assert config.HasField("dynamic_batching")
        assert not config.dynamic_batching.preferred_batch_size
        assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(repository / entry.path))
        arguments = [a.name for a in module.forward.schema.arguments[1:]]  # after self
        assert [t.name for t in config.input] == arguments, kind  # PyTorch rule: forward args
        assert all(t.data_type == pb.TYPE_FP32 for t in [*config.input, *config.output])
        assert [dims(t) for t in config.input] == [s.dims for s in entry.inputs]
        with torch.no_grad():
            result = module(*(torch.zeros(2, *dims(t)) for t in config.input))
        results = result if isinstance(result, tuple) else (result,)
        assert [t.name for t in config.output] == [f"{s.name}__{i}"
                                                   for i, s in enumerate(entry.outputs)]
        assert [dims(t) for t in config.output] == [list(r.shape[1:]) for r in results]
        assert all(r.dtype == torch.float32 for r in results)


def check_ensemble(repository: Path, model_set: ModelSet) -> None:
    """The decode ensemble wires synthesis into classifier with the manifest's versions."""
    config = parse(repository / decode_ensemble_name(model_set.name))
    assert config.platform == "ensemble"
    assert (repository / config.name / "1").is_dir()
    synthesis = parse(repository / model_set.models["synthesis"].triton_name)
    classifier = parse(repository / model_set.models["classifier"].triton_name)
    steps = config.ensemble_scheduling.step
    assert [(s.model_name, s.model_version) for s in steps] == [
        (model_set.models[k].triton_name, model_set.models[k].version)
        for k in ("synthesis", "classifier")]
    for step, composing in zip(steps, (synthesis, classifier), strict=True):
        assert set(step.input_map) == {t.name for t in composing.input}
        assert set(step.output_map) <= {t.name for t in composing.output}
    assert [(t.name, dims(t)) for t in config.input] == [("w", dims(synthesis.input[0]))]
    assert [(t.name, dims(t)) for t in config.output] == [
        ("image", dims(synthesis.output[0])), ("logits", dims(classifier.output[0]))]
    assert config.max_batch_size <= min(synthesis.max_batch_size, classifier.max_batch_size)


def test_exported_sets_get_production_configs(two_set_repository: Path) -> None:
    for name in list_model_sets(two_set_repository):
        model_set = load_model_set(two_set_repository, name)
        check_against_torchscript(two_set_repository, model_set)
        check_ensemble(two_set_repository, model_set)
        for entry in model_set.models.values():
            config = parse(two_set_repository / entry.triton_name)
            assert config.platform == "pytorch_libtorch"
            assert [g.kind for g in config.instance_group] == [pb.ModelInstanceGroup.KIND_GPU]
            assert [w.batch_size for w in config.model_warmup] == list(
                range(1, MAX_BATCH_SIZE + 1))
            assert all(set(w.inputs) == {t.name for t in config.input}
                       for w in config.model_warmup)


@pytest.mark.parametrize("name", BUNDLED_SETS)
def test_bundled_model_repository(name: str) -> None:
    model_set = load_model_set(DEFAULT_MODEL_REPOSITORY, name, verify=True)
    check_against_torchscript(DEFAULT_MODEL_REPOSITORY, model_set)
    check_ensemble(DEFAULT_MODEL_REPOSITORY, model_set)


def test_cpu_repository_mirrors_production(two_set_repository: Path, tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    names = build_cpu_repository(two_set_repository, cpu, torch_threads=2)
    assert names == list_model_sets(two_set_repository)
    for name in names:
        model_set = load_model_set(two_set_repository, name)
        for entry in model_set.models.values():
            production, local = (parse(r / entry.triton_name) for r in (two_set_repository, cpu))
            for field in ("name", "max_batch_size", "version_policy", "input", "output",
                          "dynamic_batching"):
                assert getattr(local, field) == getattr(production, field), field
            assert local.backend == "python"
            assert [g.kind for g in local.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
            assert local.parameters["torch_threads"].string_value == "2"
            version_dir = cpu / entry.triton_name / str(entry.version)
            assert (version_dir / "model.py").is_file()
            assert (version_dir / "model.pt").resolve() == (two_set_repository / entry.path)
        ensemble = decode_ensemble_name(name)
        assert parse(cpu / ensemble) == parse(two_set_repository / ensemble)
        check_against_torchscript(cpu, model_set)


def test_cpu_repository_refuses_unknown_set_and_used_folder(two_set_repository: Path,
                                                           tmp_path: Path) -> None:
    with pytest.raises(ModelSetError, match="unknown model set 'ghost'"):
        build_cpu_repository(two_set_repository, tmp_path / "a", ["ghost"])
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_cpu_repository(two_set_repository, tmp_path / "b")
    assert (tmp_path / "b" / "keep.txt").read_text() == "mine"


def test_cli_rewrites_configs(two_set_repository: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    config = two_set_repository / "tiny-synthesis" / "config.pbtxt"
    before = config.read_text()
    config.unlink()
    assert run(["triton", "configs", "--repository", str(two_set_repository),
                "--model-set", "tiny"]) == 0
    assert config.read_text() == before
    assert "tiny-decode/config.pbtxt" in capsys.readouterr().out
    assert run(["triton", "configs", "--repository", str(tmp_path)]) == 2
    assert "no model sets" in capsys.readouterr().err
