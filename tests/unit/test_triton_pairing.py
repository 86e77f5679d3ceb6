"""The production Triton image against the torch that exports the models: the pyproject
pin, the Dockerfile's TRITON_IMAGE and deploy/docker/triton-pairing.json must agree, and
the exported files must have been checked to load and compute the same outputs under a
torch of the image's libtorch version."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

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


def test_the_images_libtorch_was_checked_to_read_what_the_pinned_torch_writes() -> None:
    """The exported files were loaded and run by a torch of the image's libtorch version
    (scripts/check_libtorch.py) with the outputs of the pinned torch; a new pin or a
    new image needs that check again."""
    table = pairing()
    check = table["read_check"]
    libtorch = table["releases"][release_of(table["triton_image"])]["libtorch"]
    assert minor(check["libtorch"]) == minor(libtorch), (
        "the image's libtorch moved: run scripts/check_libtorch.py with that torch")
    assert minor(check["torch"]) == minor(torch_pin()), (
        "the torch pin moved: run scripts/check_libtorch.py against the image's libtorch")
    assert check["models"] >= 12 and check["max_abs_diff"] <= check["tolerance"] <= 1e-4
