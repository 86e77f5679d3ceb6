"""The public gRPC API, generated from ``protos/styleprobe/v1/*.proto`` on first import.

The stubs are build output, never committed and never edited: this module runs
``grpc_tools.protoc`` into the package ``styleprobe.v1`` (git-ignored) whenever it is
missing or older than the protos (a hash of them is kept beside the stubs), so a fresh
clone, a test run and a container build (``python -c "import styleprobe.api"``) all get
them. Several processes may import it at once: each generates into a folder of its own
and moves it into place.

``pb`` holds the messages, ``rpc`` the service stub and servicer base class.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.resources
import os
import shutil
from pathlib import Path
from types import ModuleType

from styleprobe.config import REPO_ROOT

PROTO_ROOT = REPO_ROOT / "protos"
API_VERSION = "v1"
GENERATED = Path(__file__).with_name(API_VERSION)
STAMP = ".proto-sha256"
SERVICE_NAME = f"styleprobe.{API_VERSION}.StyleProbe"


class ApiBuildError(RuntimeError):
    """The protos are missing or protoc rejected them."""


def proto_files() -> list[Path]:
    """The API's ``.proto`` files, relative to :data:`PROTO_ROOT`."""
    folder = PROTO_ROOT / "styleprobe" / API_VERSION
    files = sorted(p.relative_to(PROTO_ROOT) for p in folder.glob("*.proto"))
    if not files:
        raise ApiBuildError(f"no .proto files in {folder}")
    return files


def _protos_hash(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for rel in files:
        digest.update(rel.as_posix().encode() + b"\0" + (PROTO_ROOT / rel).read_bytes())
    return digest.hexdigest()


def generate(force: bool = False) -> Path:
    """(Re)generate the stubs into ``styleprobe/v1`` unless they are current; the folder."""
    from grpc_tools import protoc

    files = proto_files()
    wanted = _protos_hash(files)
    stamp = GENERATED / STAMP
    if not force and stamp.is_file() and stamp.read_text() == wanted:
        return GENERATED
    staging = GENERATED.with_name(f".{API_VERSION}-{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    out = staging / "out"
    out.mkdir(parents=True)
    includes = importlib.resources.files("grpc_tools") / "_proto"
    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{includes}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *map(str, files)]
    if protoc.main(args) != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ApiBuildError(f"protoc failed on {', '.join(map(str, files))}")
    package = out / "styleprobe" / API_VERSION
    (package / "__init__.py").write_text('"""Generated from protos/ by styleprobe.api."""\n')
    (package / STAMP).write_text(wanted)
    old = GENERATED.with_name(f".{API_VERSION}-{os.getpid()}.old")
    if GENERATED.exists():
        GENERATED.rename(old)
    with contextlib.suppress(OSError):  # another process moved its copy in first: the same
        package.rename(GENERATED)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return GENERATED


def _load(name: str) -> ModuleType:
    generate()
    return importlib.import_module(f"styleprobe.{API_VERSION}.{name}")


pb = _load("styleprobe_pb2")
rpc = _load("styleprobe_pb2_grpc")
