"""The package works from its built wheel, away from the checkout: the wheel is built from a
copy of the sources (``pip wheel``, no build isolation: the build hook of setup.py runs
with this environment's setuptools and grpcio-tools), installed with its dependencies into
a fresh virtual environment (from pip's configured index; about 40 s here), and
``styleprobe demo`` runs there from an empty folder on the bundled models it carries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from styleprobe.config import REPO_ROOT

# What the build reads (MANIFEST.in lists the same for an sdist).
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "services", "protos",
                "model_repository", "evaluation-models")
CACHES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
PROBE_SAMPLES = 2000  # enough for the knee set's direction; the default takes longer

pytestmark = pytest.mark.slow


def build_wheel(tmp_path: Path) -> Path:
    """The wheel built from a copy of the build inputs (the checkout is left untouched)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=CACHES)
        else:
            shutil.copy2(path, source / name)
    shutil.rmtree(source / "services" / "styleprobe" / "v1", ignore_errors=True)  # built anew
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("styleprobe-*.whl")
    return wheel


def test_the_wheel_runs_the_demo_outside_the_checkout(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    members = set(zipfile.ZipFile(wheel).namelist())
    for member in ("styleprobe/v1/styleprobe_pb2.py", "styleprobe/v1/styleprobe_pb2_grpc.py",
                   "styleprobe/bundled/model_repository/knee-oa.modelset.json",
                   "styleprobe/templates/explanation.html.j2"):
        assert member in members, member
    assert any(m.startswith("styleprobe/bundled/evaluation-models/") for m in members)

    env = {key: value for key, value in os.environ.items()  # nothing of this environment's
           if not key.startswith("STYLEPROBE_") and key not in ("PYTHONPATH", "PYTHONHOME")}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], env=env, check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], env=env,
                   check=True, timeout=900)

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import json, styleprobe, styleprobe.config as c; print(json.dumps("
         "[styleprobe.__file__, str(c.DEFAULT_MODEL_REPOSITORY)]))"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    package, repository = (Path(p) for p in json.loads(where.stdout))
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert package.is_relative_to(site), package  # the wheel's, not the checkout's
    assert repository == package.parent / "bundled" / "model_repository"

    demo = subprocess.run([str(venv / "bin" / "styleprobe"), "--threads", "1", "demo",
                           "--probe-samples", str(PROBE_SAMPLES)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    report = Path(demo.stdout.split("report: ")[1].split()[0])
    manifest = Path(demo.stdout.split("manifest: ")[1].split()[0])
    assert report.resolve().is_relative_to(work.resolve() / "styleprobe-artifacts")
    assert report.is_file() and manifest.is_file()
    assert json.loads(manifest.read_text())
