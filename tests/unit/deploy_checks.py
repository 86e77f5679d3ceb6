"""What the deployment tests compare the deployment files with: the code's settings and queues."""

from __future__ import annotations

import re
from dataclasses import fields

from styleprobe.config import REPO_ROOT, Settings

PREFIX = "STYLEPROBE_"
FILE_SUFFIX = "_FILE"
SETTINGS = {f.name for f in fields(Settings)}


def setting_of(variable: str) -> str:
    """The Settings field an environment variable sets (``STYLEPROBE_X`` or ``..._X_FILE``);
    AssertionError for one the code does not read."""
    assert variable.startswith(PREFIX), variable
    name = variable.removeprefix(PREFIX).lower()
    if name not in SETTINGS and name.endswith(FILE_SUFFIX.lower()):
        name = name.removesuffix(FILE_SUFFIX.lower())
    assert name in SETTINGS, f"{variable} is not read by styleprobe.config.Settings"
    return name


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` (or ``scheme://host:port/...``) split into host and port."""
    match = re.fullmatch(r"(?:\w+://)?(?:[^@/]*@)?([^:/]+):(\d+)(?:/.*)?", address)
    assert match, f"{address!r} is not host:port"
    return match.group(1), int(match.group(2))


def api_service_name() -> str:
    """The gRPC service's full name, from the proto (``package`` + ``service``)."""
    text = "\n".join(p.read_text() for p in sorted((REPO_ROOT / "protos").rglob("*.proto")))
    package = re.search(r"^package\s+([\w.]+);", text, re.M)
    service = re.search(r"^service\s+(\w+)", text, re.M)
    assert package and service, "no package or service in protos/"
    return f"{package.group(1)}.{service.group(1)}"


def worker_queues() -> set[str]:
    """The Celery queues the workers serve (styleprobe.worker.app)."""
    from styleprobe.worker.app import QUEUES

    return set(QUEUES)
