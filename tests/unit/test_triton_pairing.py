"""The production Triton image against the torch that exports the models: the pyproject
pin, the Dockerfile's TRITON_IMAGE and deploy/docker/triton-pairing.json must agree, and
the image's libtorch must be at least the exporting torch's minor version."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest

from styleprobe.config import REPO_ROOT

DOCKER = REPO_ROOT / "deploy" / "docker"


def pairing() -> dict[str, Any]:
    return json.loads((DOCKER / "triton-pairing.json").read_text())


def minor(version: str) -> tuple[int, int]:
    major, second = re.match(r"(\d+)\.(\d+)", version).groups()  # type: ignore[union-attr]
    return int(major), int(second)


def torch_pin() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if re.match(r"torch\s*==", d)]
    return pin.split("==", 1)[1].strip()


def triton_image() -> str:
    match = re.search(r"^ARG TRITON_IMAGE=(\S+)$",
                      (DOCKER / "triton.Dockerfile").read_text(), re.M)
    assert match, "triton.Dockerfile names no ARG TRITON_IMAGE"
    return match.group(1)


def release_of(image: str) -> str:
    match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", image)
    assert match, f"{image} is not an NGC tritonserver <yy.mm>-py3 image"
    return match.group(1)


def test_the_table_names_the_pinned_torch_and_the_dockerfiles_image() -> None:
    table = pairing()
    assert minor(torch_pin()) == minor(table["torch"]), (
        "pyproject's torch pin moved: pair it with an NGC release in triton-pairing.json")
    assert triton_image() == table["triton_image"], (
        "triton.Dockerfile's TRITON_IMAGE moved: record it in triton-pairing.json")
    release = table["releases"].get(release_of(table["triton_image"]))
    assert release, "the image's release is not in the table (its libtorch, CUDA, driver)"
    assert release["driver"] and release["source"].startswith("https://")


def test_a_pairing_checks_the_versions() -> None:
    assert minor("2.5.0a0") == (2, 5) and minor("2.13") < minor("2.14")
    assert release_of("nvcr.io/nvidia/tritonserver:24.10-py3") == "24.10"


@pytest.mark.xfail(strict=True, reason="known mismatch (triton-pairing.json 'status'): no NGC "
                   "release with libtorch >= 2.13 is paired and verified yet")
def test_the_images_libtorch_reads_what_the_pinned_torch_writes() -> None:
    table = pairing()
    libtorch = table["releases"][release_of(table["triton_image"])]["libtorch"]
    assert minor(libtorch) >= minor(table["torch"]) and table["verified"]
