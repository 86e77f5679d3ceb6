"""A classifier of one's own: the contract checks, add-classifier, the generator-coverage
finding, and the quick unregistered run, on the tiny model set."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.cli import run
from styleprobe.explain.direction import GeneratorCoverageError
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.modelset import list_model_sets, load_model_set
from styleprobe.storage.local import LocalStore

IMAGE = np.random.default_rng(3).random((16, 16, 1)).astype(np.float32)


class Linear(nn.Module):
    """16x16 grey images -> ``k`` logits; ``bias`` shifts them."""

    def __init__(self, k: int = 2, size: int = 16, channels: int = 1,
                 bias: tuple[float, ...] = ()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(channels * size * size, k)
        if bias:
            with torch.no_grad():
                self.linear.weight.mul_(1e-3)
                self.linear.bias.copy_(torch.tensor(bias))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.flatten(1))


class NotFinite(Linear):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.flatten(1)) / 0.0


class BatchDependent(Linear):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.linear(image.flatten(1))
        return logits - logits.mean(0, keepdim=True)


class Vector(Linear):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.linear(image.flatten(1))[:, 0]


def scripted(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module.eval()).save(str(path))
    return path


class Noisy(Linear):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.linear(image.flatten(1))
        return logits + 0.1 * torch.randn_like(logits)


@pytest.fixture
def repository(tiny_repository: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "repository"
    shutil.copytree(tiny_repository, copy, symlinks=True)
    return copy


def add(repository: Path, classifier: Path, *extra: str) -> int:
    return run(["model-set", "add-classifier", str(classifier), "--base", "tiny", "--name",
                "mine", "--class-names", "healthy,sick", "--samples", "200", "--repository",
                str(repository), *extra])


@pytest.mark.parametrize(("make", "names", "words"), [
    (lambda p: p / "missing.pt", "healthy,sick", "does not exist"),
    (lambda p: (p / "junk.pt").write_bytes(b"not a model") and p / "junk.pt", "healthy,sick",
     "neither a TorchScript classifier"),
    (lambda p: scripted(Linear(size=8), p / "small.pt"), "healthy,sick",
     "does not take images [N, 1, 16, 16]"),
    (lambda p: scripted(Linear(k=3), p / "three.pt"), "healthy,sick",
     "returns 3 logits, but 2 class names"),
    (lambda p: scripted(NotFinite(), p / "nan.pt"), "healthy,sick", "non-finite"),
    (lambda p: scripted(BatchDependent(), p / "batch.pt"), "healthy,sick",
     "differently from the same images one by one"),
    (lambda p: scripted(Noisy(), p / "noisy.pt"), "healthy,sick", "not deterministic"),
    (lambda p: scripted(Vector(), p / "vector.pt"), "healthy,sick", "expected logits [N, K]"),
    (lambda p: scripted(Linear(), p / "ok.pt"), "sick", "2 or more different names"),
])
def test_each_contract_check_is_one_line_and_exit_2(repository: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str],
                                                    make: object, names: str,
                                                    words: str) -> None:
    classifier = make(tmp_path)  # type: ignore[operator]
    before = sorted(p.name for p in repository.iterdir())
    code = run(["model-set", "add-classifier", str(classifier), "--base", "tiny", "--name",
                "mine", "--class-names", names, "--repository", str(repository)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert sorted(p.name for p in repository.iterdir()) == before  # nothing written


def test_a_classifier_becomes_a_set_that_shares_the_generator(
        repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    classifier = scripted(Linear(), tmp_path / "mine.pt")
    held_out = tmp_path / "held"
    held_out.mkdir()
    from PIL import Image
    rows = ["file,label"]
    for i in range(12):
        Image.fromarray((np.random.default_rng(i).random((16, 16)) * 255).astype(np.uint8)
                        ).save(held_out / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (held_out / "factors.csv").write_text("\n".join(rows) + "\n")
    assert add(repository, classifier, "--held-out", str(held_out), "--card-dir",
               str(tmp_path / "cards")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed["generator_coverage"]) == {"healthy", "sick"}
    assert 0.0 <= printed["quality_gate_flagged_share"] <= 1.0
    assert printed["held_out_images"] == 12

    mine = load_model_set(repository, "mine", verify=True)
    tiny = load_model_set(repository, "tiny")
    for kind in ("mapping", "synthesis", "encoder"):
        assert mine.models[kind] == tiny.models[kind]  # shared, not copied
    assert mine.models["classifier"].triton_name == "mine-classifier"
    assert (repository / "mine-classifier" / "config.pbtxt").is_file()
    assert (repository / "mine-decode" / "config.pbtxt").is_file()
    assert not (repository / "mine-mapping").exists()
    assert "Generator coverage" in (tmp_path / "cards" / "mine.md").read_text()
    assert list_model_sets(repository) == ["mine", "tiny"]

    backend = LocalBackend(repository, "mine")
    result = Explainer(backend, LocalStore(tmp_path / "store")).explain(
        IMAGE, JobSpec.create(backend.model_set, probe=ProbeSettings(samples=200)))
    assert result.model_set == "mine" and len(result.probabilities) == 17

    assert add(repository, classifier) == 2  # the name is taken
    assert "--force" in capsys.readouterr().err
    assert add(repository, classifier, "--force") == 0


def test_a_classifier_the_generator_cannot_serve(repository: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Never 'sick' on generated images: a finding when it is added, and a job that fails
    at once with the same words and the input's verdict, without probing."""
    classifier = scripted(Linear(bias=(8.0, -8.0)), tmp_path / "never.pt")
    assert add(repository, classifier) == 0
    err = capsys.readouterr().err
    finding = ("the generator draws what this classifier calls 'sick' on 0 of 200 samples: "
               "it cannot show this classifier's decision")
    assert finding in err
    assert finding in load_model_set(repository, "mine").metrics["findings"][0]

    counting = CountingBackend(LocalBackend(repository, "mine"))
    store = LocalStore(tmp_path / "store")
    spec = JobSpec.create(counting.model_set, "sick", probe=ProbeSettings(samples=500))
    for _ in range(2):
        with pytest.raises(GeneratorCoverageError, match="This image's reconstruction") as exc:
            Explainer(counting, store).explain(IMAGE, spec)
        assert "cannot show this classifier's decision" in str(exc.value)
    assert counting.calls["mapping"] == 0  # no probe: known from the recorded coverage
    assert store.list("jobs/") == []
    assert [k.endswith(".finding.json") for k in store.list("directions/")] == [True]


def test_a_probe_that_finds_one_side_is_remembered(repository: Path, tmp_path: Path) -> None:
    """Without recorded coverage (an exported set), the first probe learns the finding and
    the next job fails without a model call."""
    classifier = scripted(Linear(bias=(8.0, -8.0)), tmp_path / "never.pt")
    assert add(repository, classifier) == 0
    manifest = repository / "mine.modelset.json"
    raw = json.loads(manifest.read_text())
    raw["metrics"] = {}
    manifest.write_text(json.dumps(raw))
    store = LocalStore(tmp_path / "store")
    counting = CountingBackend(LocalBackend(repository, "mine"))
    spec = JobSpec.create(counting.model_set, "sick", probe=ProbeSettings(samples=200))
    with pytest.raises(GeneratorCoverageError, match="'sick' on 0 of 200 samples"):
        Explainer(counting, store).explain(IMAGE, spec)
    probed = counting.calls["mapping"]
    with pytest.raises(GeneratorCoverageError, match="'sick' on 0 of 200 samples"):
        Explainer(counting, store).explain(IMAGE, spec)
    assert probed > 0 and counting.calls["mapping"] == probed


def test_a_quick_run_with_an_unregistered_classifier_writes_nothing_to_the_repository(
        repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    classifier = scripted(Linear(), tmp_path / "quick.pt")
    image = tmp_path / "image.npy"
    np.save(image, IMAGE)
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(repository))
    before = sorted(p.name for p in repository.iterdir())
    assert run(["explain", str(image), "--model-set", "tiny", "--classifier", str(classifier),
                "--probe-samples", "200", "--out", str(tmp_path / "out")]) == 0
    assert "model set tiny-quick" in capsys.readouterr().out
    assert sorted(p.name for p in repository.iterdir()) == before
    assert run(["explain", str(image), "--model-set", "tiny", "--classifier",
                str(tmp_path / "missing.pt")]) == 2
