"""The public gRPC API: the stubs of ``protos/styleprobe/v1/*.proto``.

The stubs (package ``styleprobe.v1``) are build output, never committed and never edited:
the build hook in ``setup.py`` generates them when a wheel is built and on
``pip install -e .`` (``make`` runs it again whenever a proto changes). Importing this
module only imports them.

``pb`` holds the messages, ``rpc`` the service stub and servicer base class.
"""

from __future__ import annotations

API_VERSION = "v1"
SERVICE_NAME = f"styleprobe.{API_VERSION}.StyleProbe"

try:
    from styleprobe.v1 import styleprobe_pb2 as pb
    from styleprobe.v1 import styleprobe_pb2_grpc as rpc
except ModuleNotFoundError as exc:
    if exc.name not in ("styleprobe.v1", "styleprobe.v1.styleprobe_pb2",
                        "styleprobe.v1.styleprobe_pb2_grpc"):
        raise
    raise ImportError(
        "the gRPC stubs (styleprobe.v1) are missing: they are generated from protos/ at "
        "build time; in the checkout run `.venv/bin/pip install -e .` (make does so when a "
        "proto changes), or install the built wheel") from exc

__all__ = ["API_VERSION", "SERVICE_NAME", "pb", "rpc"]
