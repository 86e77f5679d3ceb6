"""Build hook: what ``build_py`` adds to the package beyond its sources.

- ``styleprobe/v1``: the gRPC stubs, generated from ``protos/`` (the one contract folder)
  with ``grpc_tools.protoc``. They are build output, git-ignored and never committed: a
  wheel carries them, and an editable install (``pip install -e .``, which ``make`` runs
  again whenever a proto changes) writes them beside the sources.
- ``styleprobe/bundled`` (wheels only): copies of ``model_repository/`` and
  ``evaluation-models/``, the defaults of an installed package
  (:func:`styleprobe.config.shipped_folder`); a checkout uses its own folders.

Everything else about the package is in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.resources
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTOS = ROOT / "protos"
API_VERSION = "v1"
BUNDLED = ("model_repository", "evaluation-models")


def generate_stubs(package: Path) -> Path:
    """Write the stubs of ``protos/styleprobe/v1/*.proto`` into ``package/v1``; the folder."""
    from grpc_tools import protoc

    files = sorted(p.relative_to(PROTOS).as_posix()
                   for p in (PROTOS / "styleprobe" / API_VERSION).glob("*.proto"))
    if not files:
        raise RuntimeError(f"no .proto files in {PROTOS / 'styleprobe' / API_VERSION}")
    includes = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as out:
        args = ["grpc_tools.protoc", f"-I{PROTOS}", f"-I{includes}", f"--python_out={out}",
                f"--pyi_out={out}", f"--grpc_python_out={out}", *files]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {', '.join(files)}")
        generated = Path(out) / "styleprobe" / API_VERSION
        (generated / "__init__.py").write_text(
            '"""gRPC stubs generated from protos/ at build time (setup.py): do not edit."""\n')
        target = package / API_VERSION
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(generated, target)
    return target


class BuildPy(build_py):
    """``build_py``, then the gRPC stubs and, in a wheel, the bundled model folders."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the sources are the package: the stubs go beside them
            generate_stubs(ROOT / self.get_package_dir("styleprobe"))
            return
        package = Path(self.build_lib) / "styleprobe"
        generate_stubs(package)
        for name in BUNDLED:
            target = package / "bundled" / name
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(ROOT / name, target)


setup(cmdclass={"build_py": BuildPy})
