"""Compose hardening (issue 18): the API and MinIO on the host's loopback by default, the
services on their own MinIO user (not root) with a policy limited to their bucket, and
docker-compose.tls.yml turning TLS on for the API. No Docker engine needed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy_checks import setting_of
from test_deploy_compose import COMPOSE, SECRETS_DIR, app_services, load

from styleprobe.config import REPO_ROOT, Settings

TLS_OVERRIDE = REPO_ROOT / "docker-compose.tls.yml"
ROOT_SECRETS = {"s3_access_key", "s3_secret_key"}
APP_SECRETS = {"s3_app_access_key", "s3_app_secret_key"}


def host_address(port: str) -> str:
    """The host address a ``[address:]published:target`` entry binds, variables resolved
    to their defaults ("" : every interface)."""
    resolved = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(port))
    parts = resolved.split(":")
    return parts[0] if len(parts) == 3 else ""


def test_api_and_minio_listen_on_loopback_by_default() -> None:
    services = load(COMPOSE)["services"]
    for name in ("orchestrator", "minio", "triton", "prometheus", "grafana"):
        for port in services[name].get("ports", []):
            assert host_address(port) == "127.0.0.1", (name, port)
    orchestrator = services["orchestrator"]["environment"]
    # plaintext inside the compose network and on loopback: allowed explicitly
    assert orchestrator["STYLEPROBE_GRPC_PLAINTEXT_TOKENS"] == "true"


def test_services_use_their_own_minio_user_not_root() -> None:
    project = load(COMPOSE)
    services = project["services"]
    assert set(project["secrets"]) >= (APP_SECRETS | ROOT_SECRETS)
    for name, service in app_services(project).items():
        assert not ROOT_SECRETS & set(service.get("secrets", [])), name
        files = {k: v for k, v in service["environment"].items()
                 if k.startswith("STYLEPROBE_S3_") and k.endswith("_FILE")}
        assert set(files.values()) == {SECRETS_DIR + s for s in APP_SECRETS}, name
    holders = {n for n, s in services.items() if ROOT_SECRETS & set(s.get("secrets", []))}
    assert holders == {"minio", "minio-init"}


def test_minio_init_creates_the_user_with_a_policy_for_the_bucket_only() -> None:
    init = load(COMPOSE)["services"]["minio-init"]
    script = init["command"][0]
    assert set(init["secrets"]) >= APP_SECRETS
    for step in ("mc admin policy create styleprobe styleprobe-app",
                 'mc admin user add styleprobe "$$app"',
                 "mc admin policy attach styleprobe styleprobe-app --user"):
        assert step in script, step
    policy = json.loads(init["environment"]["STYLEPROBE_APP_POLICY"])
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::styleprobe", "arn:aws:s3:::styleprobe/*"}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"} <= actions
    assert not [a for a in actions if "*" in a or a.startswith("admin:")]


def test_the_tls_override_is_valid_and_wires_the_certificate() -> None:
    tool = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec",
                             str(TLS_OVERRIDE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    override = load(TLS_OVERRIDE)
    service = override["services"]["orchestrator"]
    env = service["environment"]
    for variable in env:
        setting_of(variable)
    for variable in ("STYLEPROBE_GRPC_TLS_CERT", "STYLEPROBE_GRPC_TLS_KEY"):
        secret = env[variable].removeprefix(SECRETS_DIR)
        assert secret in service["secrets"] and secret in override["secrets"], variable
        assert override["secrets"][secret]["file"].startswith("./deploy/secrets/")
    merged: dict[str, Any] = {**load(COMPOSE)["services"]["orchestrator"]["environment"],
                              **env}
    settings = Settings.from_env({k: str(v) for k, v in merged.items()
                                  if k.startswith("STYLEPROBE_") and not k.endswith("_FILE")})
    assert not settings.grpc_plaintext_tokens
    assert settings.grpc_health_listen.startswith("127.0.0.1:")  # the healthcheck's port
    gateway = override["services"]["dicom-gateway"]
    assert gateway["environment"]["STYLEPROBE_GATEWAY_TLS_CA"] == SECRETS_DIR + "grpc_tls_ca"
    assert "grpc_tls_ca" in gateway["secrets"] and "grpc_tls_ca" in override["secrets"]
    assert "dicom-gateway" in load(COMPOSE)["services"]
