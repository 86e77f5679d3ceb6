"""The DICOM gateway in the deployment files: Compose and the Helm chart run
``serve dicom-gateway`` with settings the code reads, the orchestrator's address, a
token from a secret file, routes that parse, and its DICOM port published."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from deploy_checks import host_port, setting_of

from styleprobe.config import REPO_ROOT, Settings
from styleprobe.gateway.routing import parse_routes

CHART = REPO_ROOT / "helm" / "styleprobe"
ENABLED = {"gateway": {"enabled": True, "destination": "PACS@pacs.hospital:104",
                       "routes": [{"calling_ae": "XR1", "model_set": "knee-oa"}],
                       "allowedFrom": [{"ipBlock": {"cidr": "10.1.0.0/16"}}]}}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="sp", namespace="styleprobe",
                                 is_install=True)
    return [doc for name, text in sorted(manifests.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def gateway_objects(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects
            if o["metadata"]["labels"].get("app.kubernetes.io/component") == "dicom-gateway"
            or o["metadata"]["name"] == "sp-styleprobe-dicom-gateway"}


def test_the_chart_has_no_gateway_unless_enabled() -> None:
    assert not gateway_objects(render({}))


def test_the_charts_gateway_is_wired_to_the_orchestrator() -> None:
    objects = render(ENABLED)
    gateway = gateway_objects(objects)
    assert set(gateway) == {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"}
    for kind in gateway.values():
        kubernetes_validate.validate(kind, "1.30.0", strict=True)
    container = gateway["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["serve", "dicom-gateway"]
    env = {v["name"]: v["value"] for v in container["env"]}
    settings = Settings.from_env({k: v for k, v in env.items() if not k.endswith("_FILE")})
    for name in env:
        setting_of(name)
    assert parse_routes(settings.gateway_routes)[0].calling_ae == "XR1"
    assert settings.gateway_destination == "PACS@pacs.hospital:104"
    orchestrator = next(o for o in objects if o["kind"] == "Service"
                        and o["metadata"]["name"] == "sp-styleprobe-orchestrator")
    host, port = host_port(settings.gateway_orchestrator)
    assert host == orchestrator["metadata"]["name"]
    assert port in [p["port"] for p in orchestrator["spec"]["ports"]]
    dicom = {p["name"]: p["containerPort"] for p in container["ports"]}["dicom"]
    assert host_port(settings.gateway_listen)[1] == dicom
    volumes = {v["name"]: v for v in gateway["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["secrets"]["secret"]["items"] == [{"key": "api-tokens",
                                                      "path": "gateway-token"}]
    assert env["STYLEPROBE_GATEWAY_TOKEN_FILE"].endswith("/gateway-token")
    if "orchestrator-ca" in volumes:  # the orchestrator serves TLS: checked against its CA
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert settings.gateway_tls_ca.startswith(mounts["orchestrator-ca"])
    assert gateway["NetworkPolicy"]["spec"]["ingress"][0]["from"] == [
        {"ipBlock": {"cidr": "10.1.0.0/16"}}]


@pytest.mark.parametrize("bad", [{"aeTitle": "A" * 17}, {"destination": "PACS:104"},
                                 {"routes": [{"modality": "DX"}]}])
def test_the_schema_refuses_bad_gateway_values(bad: dict[str, Any]) -> None:
    with pytest.raises(Exception, match="gateway"):
        render({"gateway": {"enabled": True, **bad}})


def test_compose_runs_the_gateway_with_settings_the_code_reads() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["dicom-gateway"]
    assert service["command"] == ["serve", "dicom-gateway"]
    env = {k: str(v) for k, v in service["environment"].items()}
    for name in env:
        setting_of(name)
    assert env["STYLEPROBE_GATEWAY_TOKEN_FILE"] == "/run/secrets/gateway_token"
    assert "gateway_token" in service["secrets"] and "gateway_token" in compose["secrets"]
    host, port = host_port(env["STYLEPROBE_GATEWAY_ORCHESTRATOR"])
    listen = compose["services"][host]["environment"]["STYLEPROBE_GRPC_LISTEN"]
    assert host == "orchestrator" and host_port(listen)[1] == port
    dicom = host_port(env["STYLEPROBE_GATEWAY_LISTEN"])[1]
    assert f"{dicom}:{dicom}" in service["ports"]
    routes = env["STYLEPROBE_GATEWAY_ROUTES"]  # the default of ${...:-[...]}
    default = routes[routes.index(":-") + 2:-1]
    assert [r.model_set for r in parse_routes(default)] == ["knee-oa", "knee-oa"]
    assert json.loads(default)[0]["modality"] == "DX"


def test_the_charts_gateway_serves_dicom_tls_from_a_secret() -> None:
    gateway = gateway_objects(render({"gateway": {
        **ENABLED["gateway"], "dicomTls": {"existingSecret": "pacs-tls",
                                           "requireClientCertificate": True}}}))
    kubernetes_validate.validate(gateway["Deployment"], "1.30.0", strict=True)
    pod = gateway["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {v["name"]: v["value"] for v in container["env"]}
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["dicom-tls"]
    assert {v["name"]: v for v in pod["volumes"]}["dicom-tls"]["secret"]["secretName"] == (
        "pacs-tls")
    for name, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CLIENT_CA", "ca.crt")):
        assert env[f"STYLEPROBE_GATEWAY_DICOM_TLS_{name}"] == f"{mount}/{file}"
