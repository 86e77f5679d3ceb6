"""StyleSpace access and attribute discovery (AttFind): the entry points reproduce the
synthesis, the greedy selection and the ranking find known channels, and an explanation
asked for attributes carries one traversal and one strip per attribute."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import Cli

from styleprobe.backends.local import LocalBackend
from styleprobe.explain.attributes import (
    attributes_key,
    candidate_channels,
    discover,
    ensure_attributes,
    flip_lambda,
    greedy_select,
    log_odds,
    shared_discovery,
    traverse_attributes,
)
from styleprobe.explain.engine import Explainer
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import AttributeSettings, JobSpec, JobSpecError, ProbeSettings
from styleprobe.models.stylegan2 import Generator, GeneratorConfig
from styleprobe.modelset import (
    STYLESPACE_KINDS,
    ModelSet,
    StyleLayer,
    load_model_set,
    manifest_path,
    sha256_file,
)
from styleprobe.storage.local import LocalStore
from styleprobe.training.export import add_stylespace

REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
BUNDLED = ("knee-oa", "histology-tumour")


# --- StyleSpace entry points -------------------------------------------------------------------

def test_synthesis_from_styles_equals_synthesis() -> None:
    G = Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2,
                                  channel_base=64, channel_max=16)).eval()
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
        ws = G.broadcast(ws) + 0.1 * torch.randn(3, G.cfg.num_ws, 8)  # per-layer styles too
        styles = G.synthesis.styles(ws)
        assert styles.shape == (3, sum(c for _, c in G.synthesis.style_layout()))
        assert torch.equal(G.synthesis.synthesize(styles, "const"), G.synthesis(ws, "const"))
    names = [name for name, _ in G.synthesis.style_layout()]
    assert names == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb",
                     "b16.conv0", "b16.conv1", "b16.torgb"]


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_serve_their_stylespace(name: str) -> None:
    backend = LocalBackend(REPOSITORY, name)
    assert backend.model_set.has_stylespace
    z = np.random.default_rng(0).standard_normal((3, backend.model_set.z_dim)).astype(np.float32)
    w = backend.mapping(z)
    styles = backend.styles(w)
    assert styles.shape[1] == sum(layer.channels for layer in backend.model_set.style_layers)
    np.testing.assert_allclose(backend.style_synthesis(styles), backend.synthesis(w), atol=1e-5)


def test_add_stylespace_keeps_the_existing_models(tmp_path: Path) -> None:
    name = "histology-tumour"
    raw = json.loads(manifest_path(REPOSITORY, name).read_text())
    for kind in STYLESPACE_KINDS:
        del raw["models"][kind]
    raw.pop("style_layers")
    manifest_path(tmp_path, name).write_text(json.dumps(raw))
    for kind in ("mapping", "synthesis", "encoder", "classifier"):
        shutil.copytree(REPOSITORY / f"{name}-{kind}", tmp_path / f"{name}-{kind}")
    before = load_model_set(tmp_path, name, verify=True)
    assert not before.has_stylespace
    hashes = {k: sha256_file(tmp_path / e.path) for k, e in before.models.items()}

    result = add_stylespace(tmp_path, name)

    after = load_model_set(tmp_path, name, verify=True)
    assert after.has_stylespace and after == result.model_set
    assert {k: after.models[k].sha256 for k in hashes} == hashes
    assert all(d < 1e-5 for d in result.parity.values())
    assert (tmp_path / f"{name}-styles" / "config.pbtxt").is_file()
    backend = LocalBackend(tmp_path, name)
    w = backend.mapping(np.ones((2, after.z_dim), np.float32))
    np.testing.assert_allclose(backend.style_synthesis(backend.styles(w)),
                               backend.synthesis(w), atol=1e-5)


# --- the greedy selection ----------------------------------------------------------------------

def test_greedy_picks_the_strongest_channel_and_orients_it() -> None:
    base = np.array([-2.0, -1.0, 1.0, 2.0])  # two images below the threshold 0, two above
    up = np.zeros((4, 3))
    down = np.zeros((4, 3))
    up[:, 1], down[:, 1] = -5.0, 5.0  # channel 1 lowers the target when raised
    up[:, 2], down[:, 2] = 0.5, -0.5
    picks = greedy_select(up, down, base, 0.0, top=2)
    assert [p["column"] for p in picks] == [1, 2]
    assert picks[0]["sign"] == -1.0 and picks[1]["sign"] == 1.0
    assert picks[0]["effect_logit"] == pytest.approx(5.0)
    assert picks[0]["flip_share"] == 1.0 and picks[1]["flip_share"] == 0.0


def test_greedy_ranks_on_the_images_not_yet_flipped() -> None:
    # channel 0 flips images 0 and 1 only; channel 1 is strong on those same two images;
    # channel 2 is weaker overall but moves the images channel 0 leaves unflipped
    base = np.full(4, -1.0)
    up = np.array([[3.0, 2.9, 0.2], [3.0, 2.9, 0.2], [0.1, 0.0, 0.8], [0.1, 0.0, 0.8]])
    down = -up
    picks = greedy_select(up, down, base, 0.0, top=3)
    assert [p["column"] for p in picks] == [0, 2, 1]
    assert picks[1]["effect_logit"] == pytest.approx(0.8)


def test_greedy_returns_at_most_the_candidates() -> None:
    picks = greedy_select(np.ones((2, 2)), -np.ones((2, 2)), np.zeros(2) - 5, 0.0, top=5)
    assert len(picks) == 2


def test_flip_lambda_interpolates_towards_the_other_class() -> None:
    lambdas = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    rising = np.array([0.1, 0.2, 0.3, 0.4, 0.7])
    assert flip_lambda(lambdas, rising, 0.3, 0.5) == pytest.approx(1.0 + 1 / 3)
    falling = np.array([0.1, 0.2, 0.6, 0.8, 0.9])
    assert flip_lambda(lambdas, falling, 0.6, 0.5) == pytest.approx(-0.25)
    assert flip_lambda(lambdas, np.full(5, 0.3), 0.3, 0.5) is None


# --- ranking on a backend with known channels --------------------------------------------------

class StyleBackend:
    """A known answer in StyleSpace: ``styles(w)`` are the first S coordinates of ``w``
    scaled per channel, the image carries them, and the target's logit is
    ``weights · styles``."""

    LAYERS = (StyleLayer("b4.conv1", 4), StyleLayer("b4.torgb", 2), StyleLayer("b8.conv0", 4))

    def __init__(self, model_set: ModelSet, weights: np.ndarray, scales: np.ndarray) -> None:
        self.model_set = replace(model_set, style_layers=list(self.LAYERS))
        self.weights, self.scales = weights, scales
        self.size = sum(layer.channels for layer in self.LAYERS)
        self.calls: list[str] = []

    def mapping(self, z: np.ndarray) -> np.ndarray:
        return z.astype(np.float32)

    def styles(self, w: np.ndarray) -> np.ndarray:
        self.calls.append("styles")
        return (w[:, :self.size] * self.scales).astype(np.float32)

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        self.calls.append("stylesynthesis")
        c, r = self.model_set.preprocessing.channels, self.model_set.preprocessing.resolution
        image = np.zeros((len(styles), c * r * r), np.float32)
        image[:, :self.size] = styles
        return image.reshape(len(styles), c, r, r)

    def classifier(self, image: np.ndarray) -> np.ndarray:
        styles = image.reshape(len(image), -1)[:, :self.size]
        logit = styles.astype(np.float64) @ self.weights
        return np.stack([np.zeros_like(logit), logit], axis=1).astype(np.float32)


@pytest.fixture
def style_backend() -> StyleBackend:
    weights = np.array([0.0, 0.2, -1.0, 0.0, 50.0, 50.0, 0.0, 0.5, 0.0, 0.05])
    scales = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0])
    return StyleBackend(load_model_set(REPOSITORY, "knee-oa"), weights, scales)


def test_candidates_are_the_moving_conv_channels(style_backend: StyleBackend) -> None:
    sigma = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    assert candidate_channels(style_backend.model_set, sigma).tolist() == [0, 1, 2, 6, 7, 8, 9]


def test_discovery_finds_the_channels_the_classifier_reads(style_backend: StyleBackend) -> None:
    settings = AttributeSettings(top=3, samples=6, shift=1.0)
    found = discover(style_backend, "OA", settings)
    # |weight| x spread: channel 2 (1.0), channel 7 (0.5 x 2), channel 1 (0.2); the toRGB
    # channels 4 and 5 are left out however strong, channel 3 never moves
    assert [a.channel for a in found.attributes[:2]] in ([2, 7], [7, 2])
    assert found.attributes[2].channel == 1
    by_channel = {a.channel: a for a in found.attributes}
    assert by_channel[2].sign == -1.0 and by_channel[7].sign == 1.0
    assert by_channel[2].layer == "b4.conv1" and by_channel[7].layer == "b8.conv0"
    assert by_channel[7].layer_channel == 1 and by_channel[7].name == "b8.conv0#1"
    assert by_channel[2].sigma == pytest.approx(1.0, rel=0.1)
    assert found.candidates == 7 and found.samples == 6
    assert [a.rank for a in found.attributes] == [1, 2, 3]


def test_traversal_moves_one_channel_and_raises_the_target(style_backend: StyleBackend) -> None:
    found = discover(style_backend, "OA", AttributeSettings(top=2, samples=4, shift=1.0))
    w = np.zeros(128, np.float32)
    lambdas = np.linspace(-3, 3, 7)
    traversals = traverse_attributes(style_backend, w, found, lambdas)
    assert len(traversals) == 2
    for t in traversals:
        assert np.all(np.diff(t.probabilities) > 0)  # +λ raises the target
        assert t.effect == pytest.approx(t.probabilities[-1] - t.probabilities[0])
        assert t.flip_lambda == pytest.approx(0.0, abs=1e-6)  # P = 0.5 at λ = 0: flips at once
        changed = np.flatnonzero(np.ptp(t.images.reshape(len(lambdas), -1), axis=0))
        assert changed.tolist() == [t.attribute.channel]


def test_discovery_is_stored_once(style_backend: StyleBackend, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    settings = AttributeSettings(top=2, samples=2, shift=1.0)
    key = ensure_attributes(style_backend, store, "OA", settings)
    assert key == attributes_key(style_backend.model_set, "OA", settings)
    assert key.startswith("attributes/") and store.exists(key)
    style_backend.calls.clear()
    assert ensure_attributes(style_backend, store, "OA", settings) == key
    assert style_backend.calls == []
    other = ensure_attributes(style_backend, store, "OA", replace(settings, shift=2.0))
    assert other != key


def test_concurrent_jobs_rank_once_behind_the_lock(style_backend: StyleBackend,
                                                   tmp_path: Path) -> None:
    from contextlib import contextmanager

    store = LocalStore(tmp_path)
    settings = AttributeSettings(top=2, samples=2, shift=1.0)
    locked: list[str] = []
    renewals: list[int] = []

    @contextmanager
    def single_flight(key: str):  # type: ignore[no-untyped-def]
        locked.append(key)
        yield lambda: renewals.append(1)

    key = shared_discovery(style_backend, store, "OA", settings, single_flight)
    assert locked == [key] and renewals  # the lease is renewed while ranking
    style_backend.calls.clear()
    assert shared_discovery(style_backend, store, "OA", settings, single_flight) == key
    assert locked == [key] and style_backend.calls == []  # found stored: no lock, no model


def test_log_odds_is_finite_at_the_ends() -> None:
    assert np.all(np.isfinite(log_odds(np.array([0.0, 0.5, 1.0]))))
    assert log_odds(np.array([0.5]))[0] == pytest.approx(0.0)


# --- the job spec ------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [("top", 0), ("top", 21), ("samples", 0),
                                         ("shift", 0.0), ("shift", float("nan")), ("seed", -1)])
def test_attribute_settings_are_checked(field: str, value: float) -> None:
    with pytest.raises(JobSpecError):
        AttributeSettings(**{field: value})


def test_spec_round_trip_with_and_without_attributes() -> None:
    model_set = load_model_set(REPOSITORY, "knee-oa")
    plain = JobSpec.create(model_set)
    assert "attributes" not in plain.to_dict()
    assert JobSpec.from_dict(plain.to_dict()) == plain
    asked = JobSpec.create(model_set, attributes=AttributeSettings(top=3))
    assert JobSpec.from_dict(json.loads(json.dumps(asked.to_dict()))) == asked


def test_a_set_without_stylespace_is_refused() -> None:
    model_set = replace(load_model_set(REPOSITORY, "knee-oa"), style_layers=[])
    with pytest.raises(JobSpecError, match="exports no StyleSpace") as caught:
        JobSpec.create(model_set, attributes=AttributeSettings())
    assert caught.value.setting == "attributes"


# --- an explanation with attributes -------------------------------------------------------------

def test_explanation_carries_one_traversal_and_strip_per_attribute(tiny_repository: Path,
                                                                    tmp_path: Path) -> None:
    torch.set_num_threads(1)
    backend = LocalBackend(tiny_repository, "tiny")
    spec = JobSpec.create(backend.model_set, None, "-2:2:5", ProbeSettings(samples=200),
                          attributes=AttributeSettings(top=2, samples=2))
    image = np.random.default_rng(0).random((16, 16, 1))
    store = LocalStore(tmp_path)
    result = Explainer(backend, store).explain(image, spec)
    assert [a.rank for a in result.attributes] == [1, 2]
    for a in result.attributes:
        assert len(a.probabilities) == len(a.lambdas) == 5
        assert store.exists(result.outputs[f"attribute_{a.rank:02d}"])
    report = store.get(result.outputs["report"]).decode()
    assert report.count('alt="attribute ') == 2 and result.attributes[0].name in report
    again = ExplanationResult.from_json(store.get(result.outputs["manifest"]))
    assert again.attributes == result.attributes


# --- the gRPC request's options ----------------------------------------------------------------

def test_request_options_default_and_name_the_field_at_fault() -> None:
    from styleprobe.api import pb
    from styleprobe.orchestrator.attributes import attribute_settings
    from styleprobe.orchestrator.requests import RequestError

    assert attribute_settings(pb.AttributeOptions()) == AttributeSettings()
    assert attribute_settings(pb.AttributeOptions(top=2, seed=7)) == AttributeSettings(
        top=2, seed=7)
    with pytest.raises(RequestError, match=r"^attributes\.samples:") as refused:
        attribute_settings(pb.AttributeOptions(samples=300))
    assert refused.value.code.name == "INVALID_ARGUMENT"


def test_a_set_without_stylespace_is_a_failed_precondition(tmp_path: Path) -> None:
    from styleprobe.orchestrator.attributes import with_attributes
    from styleprobe.orchestrator.requests import RequestError

    raw = json.loads(manifest_path(REPOSITORY, "knee-oa").read_text())
    raw.pop("style_layers")
    manifest_path(tmp_path, "knee-oa").write_text(json.dumps(raw))
    spec = JobSpec.create(load_model_set(tmp_path, "knee-oa"))
    with pytest.raises(RequestError, match="exports no StyleSpace") as refused:
        with_attributes(spec, tmp_path, AttributeSettings())
    assert refused.value.code.name == "FAILED_PRECONDITION"
    asked = with_attributes(spec, REPOSITORY, AttributeSettings(top=2))
    assert asked.attributes == AttributeSettings(top=2)


# --- the command line: attributes of one image, attribute columns of a cohort -------------------

@pytest.fixture
def tiny_env(tiny_repository: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STYLEPROBE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("STYLEPROBE_PROBE_SAMPLES", "200")
    return tiny_repository


def _grey_png(path: Path, seed: int) -> Path:
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((16, 16)) * 255).astype(np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return path


def test_cli_prints_each_attribute_and_refuses_bad_options(tiny_env: Path, tmp_path: Path,
                                                           cli: Cli) -> None:
    image = _grey_png(tmp_path / "scan.png", 0)
    out = tmp_path / "out"
    code, stdout, stderr = cli("attributes", image, "--model-set", "tiny", "--top", "3",
                               "--attribute-samples", "2", "--lambdas", "-2:2:5",
                               "--out", out)
    assert code == 0, stderr
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    assert [line.split(".")[0].strip() for line in lines] == ["1", "2", "3"]
    assert all("effect" in line and ("flips at" in line or "no flip" in line)
               for line in lines)
    report = Path(stdout.split("report: ")[1].split()[0])
    assert report.is_file() and (report.parent / "attribute_03.png").is_file()

    code, _, stderr = cli("attributes", image, "--model-set", "tiny", "--top", "0",
                          "--out", out)
    assert code == 2 and "attributes must lie in 1..20" in stderr


def test_cohort_summary_has_attribute_columns(tiny_env: Path, tmp_path: Path,
                                              cli: Cli) -> None:
    import csv

    folder = tmp_path / "scans"
    folder.mkdir()
    for i in range(2):
        _grey_png(folder / f"scan{i}.png", i)
    code, stdout, stderr = cli("cohort", "run", folder, "--model-set", "tiny", "--lambdas",
                               "-2:2:3", "--attributes", "2", "--out", tmp_path / "out")
    assert code == 0, stderr
    table = Path(stdout.split("csv: ")[1].split()[0])
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    for row in rows:
        for rank in (1, 2):
            assert -1.0 <= float(row[f"attribute_{rank}_effect"]) <= 1.0
            assert f"attribute_{rank}_flip_lambda" in row


def test_a_cohort_request_asks_for_attributes(tmp_path: Path) -> None:
    from styleprobe.api import pb
    from styleprobe.orchestrator.cohorts import check_cohort
    from styleprobe.orchestrator.requests import RequestError

    store = LocalStore(tmp_path)
    inline = pb.InlineImages(images=[pb.InlineImage(filename="a.png", data=b"png")])
    plain = check_cohort(pb.SubmitCohortRequest(model_set="knee-oa", inline=inline),
                         REPOSITORY, store, 200, "c1")
    assert plain.spec.attributes is None
    asked = check_cohort(pb.SubmitCohortRequest(
        model_set="knee-oa", inline=inline, attributes=pb.AttributeOptions(top=2)),
        REPOSITORY, store, 200, "c2")
    assert asked.spec.attributes == AttributeSettings(top=2)
    with pytest.raises(RequestError, match=r"^attributes\.top:"):
        check_cohort(pb.SubmitCohortRequest(model_set="knee-oa", inline=inline,
                                            attributes=pb.AttributeOptions(top=99)),
                     REPOSITORY, store, 200, "c3")
    assert store.list() == []
