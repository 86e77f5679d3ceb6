"""The Dockerfiles, read as text (no Docker engine here): what each stage does, who runs the
process, the health checks, the settings, and what the build context must hold."""

from __future__ import annotations

import fnmatch
import re
import tomllib

import pytest
from deploy_checks import setting_of

from styleprobe.config import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make ", "apt-get install")


def instructions(name: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def stages(name: str) -> list[list[tuple[str, str]]]:
    """The build stages, each a list of its instructions (ARGs before the first FROM dropped)."""
    found: list[list[tuple[str, str]]] = []
    for keyword, args in instructions(name):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, args))
    return found


def values(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for k, args in stage if k == keyword]


def test_app_image_builds_in_one_stage_and_runs_from_a_clean_one() -> None:
    build, runtime = stages("Dockerfile")
    assert " AS build" in values(build, "FROM")[0] and " AS runtime" in values(runtime, "FROM")[0]
    assert any("build-essential" in run for run in values(build, "RUN"))
    for run in values(runtime, "RUN"):
        assert not any(tool in run for tool in BUILD_TOOLS), run
    copies = values(runtime, "COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies)
    user = values(runtime, "USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert values(runtime, "ENTRYPOINT")[-1].startswith('["styleprobe"')


def test_app_image_checks_its_health_and_names_only_real_settings() -> None:
    _, runtime = stages("Dockerfile")
    healthcheck = values(runtime, "HEALTHCHECK")[-1]
    assert '"-m", "styleprobe.healthcheck", "orchestrator"' in healthcheck
    variables = re.findall(r"\bSTYLEPROBE_\w+", (DOCKER / "Dockerfile").read_text())
    assert variables
    for variable in variables:
        setting_of(variable)


def test_app_image_installs_the_torch_that_pyproject_pins() -> None:
    pins = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch = next(p for p in pins if re.match(r"torch\b", p))
    argument = next(a for k, a in instructions("Dockerfile")
                    if k == "ARG" and a.startswith("TORCH_VERSION="))
    assert torch == f"torch=={argument.split('=', 1)[1]}"


def test_triton_image_serves_the_repository_explicitly_and_unprivileged() -> None:
    (stage,) = stages("triton.Dockerfile")
    command = values(stage, "CMD")[-1]
    for flag in ("--model-repository=/models", "--model-control-mode=explicit",
                 "--load-model=*", "--strict-readiness=false", "--exit-on-error=true",
                 "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"):
        assert f'"{flag}"' in command, flag
    assert "nvcr.io/nvidia/tritonserver" in (DOCKER / "triton.Dockerfile").read_text()
    assert values(stage, "COPY")[-1].endswith("model_repository/ /models/")
    assert values(stage, "USER")[-1].split(":")[0] not in ("root", "0")
    assert "/v2/health/ready" in values(stage, "HEALTHCHECK")[-1]
    text = (DOCKER / "triton.Dockerfile").read_text()
    for choice in ("--model-control-mode=explicit", "--strict-readiness=false"):  # explained
        assert re.search(rf"^# {re.escape(choice)}\s+\S", text, re.M), choice


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore leaves ``path`` out (its last matching pattern decides)."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) for p in prefixes):
            verdict = not negated
    return verdict


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "triton.Dockerfile"])
def test_build_context_holds_what_the_images_copy(dockerfile: str) -> None:
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for keyword, args in instructions(dockerfile):
        if keyword == "COPY" and "--from=" not in args:
            *sources, _ = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert not ignored(source.rstrip("/"), patterns), source
    for left_out in (".venv", "runs", ".git", "services/styleprobe/v1"):
        assert ignored(left_out, patterns), left_out


def test_model_repository_is_ready_for_the_triton_image() -> None:
    repository = REPO_ROOT / "model_repository"
    models = sorted(p for p in repository.glob("*/") if p.is_dir())
    assert models, f"no model sets in {repository}"
    for model in models:
        config = (model / "config.pbtxt").read_text()
        platform = re.search(r'^platform:\s*"([^"]+)"', config, re.M)
        assert platform and platform.group(1) in ("pytorch_libtorch", "ensemble"), model.name
        if platform.group(1) == "pytorch_libtorch":
            assert "KIND_GPU" in config, model.name
