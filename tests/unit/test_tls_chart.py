"""The chart's TLS, Ingress, extension points and Redis password (issue 18), rendered and
validated offline (Helm v4 library, kubernetes-validate --strict against Kubernetes 1.30)."""

from __future__ import annotations

import base64
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from cryptography import x509
from test_deploy_helm import (
    CHART,
    KUBERNETES,
    RELEASE,
    Objects,
    containers,
    of_kind,
    one,
    production_values,
    render,
)

HOST = "styleprobe.hospital.example"
ORCHESTRATOR = f"{RELEASE}-styleprobe-orchestrator"


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {v["name"]: v.get("value", "") for v in container.get("env", [])}


def pod(objects: Objects, kind: str, component: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, kind, component)["spec"]["template"]["spec"]
    return spec


def validate(objects: Objects) -> None:
    for obj in objects:
        if obj["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def decoded(secret: dict[str, Any], key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def test_the_orchestrator_serves_tls_from_a_generated_certificate_by_default() -> None:
    objects = render()
    container = containers(one(objects, "Deployment", "orchestrator"))[0]
    env = env_of(container)
    assert env["STYLEPROBE_GRPC_TLS_CERT"] == "/run/tls/tls.crt"
    assert env["STYLEPROBE_GRPC_TLS_KEY"] == "/run/tls/tls.key"
    assert "STYLEPROBE_GRPC_PLAINTEXT_TOKENS" not in env
    assert {"name": "tls", "mountPath": "/run/tls", "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in pod(objects, "Deployment", "orchestrator")["volumes"]
                  if v["name"] == "tls")
    secret = of_kind(objects, "Secret")[volume["secret"]["secretName"]]
    assert secret["type"] == "kubernetes.io/tls"
    cert = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
    authority = x509.load_pem_x509_certificate(decoded(secret, "ca.crt"))
    cert.verify_directly_issued_by(authority)  # raises if ca.crt did not sign it
    names = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert ORCHESTRATOR in names and f"{ORCHESTRATOR}.styleprobe.svc" in names
    assert b"PRIVATE KEY" in decoded(secret, "tls.key")


def test_an_existing_certificate_and_mtls() -> None:
    objects = render({"orchestrator": {"tls": {"enabled": True, "existingSecret": "api-cert",
                                                "clientAuth": True}}})
    validate(objects)
    assert not [s for s in of_kind(objects, "Secret").values()
                if s["type"] == "kubernetes.io/tls"]
    env = env_of(containers(one(objects, "Deployment", "orchestrator"))[0])
    assert env["STYLEPROBE_GRPC_TLS_CLIENT_CA"] == "/run/tls/ca.crt"
    volume = next(v for v in pod(objects, "Deployment", "orchestrator")["volumes"]
                  if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "api-cert"
    assert {"key": "ca.crt", "path": "ca.crt"} in volume["secret"]["items"]
    with pytest.raises(helm.HelmRenderError, match="clientAuth needs"):
        render({"orchestrator": {"tls": {"enabled": True, "clientAuth": True}}})


def test_plaintext_takes_tokens_only_when_told() -> None:
    for plaintext_tokens in (False, True):
        objects = render({"orchestrator": {"tls": {"enabled": False,
                                                    "plaintextTokens": plaintext_tokens}}})
        container = containers(one(objects, "Deployment", "orchestrator"))[0]
        env = env_of(container)
        assert "STYLEPROBE_GRPC_TLS_CERT" not in env
        assert ("STYLEPROBE_GRPC_PLAINTEXT_TOKENS" in env) == plaintext_tokens
        assert "tls" not in [m["name"] for m in container["volumeMounts"]]
        assert not [s for s in of_kind(objects, "Secret").values()
                    if s["type"] == "kubernetes.io/tls"]


def test_an_ingress_for_grpc_with_tls() -> None:
    values = {"ingress": {"enabled": True, "host": HOST, "tlsSecret": "api-public",
                          "annotations": {"cert-manager.io/cluster-issuer": "hospital"}}}
    objects = render(values)
    validate(objects)
    (ingress,) = of_kind(objects, "Ingress").values()
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-verify"] == "on"
    assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-name"] == ORCHESTRATOR
    assert annotations["cert-manager.io/cluster-issuer"] == "hospital"
    assert ingress["spec"]["tls"] == [{"hosts": [HOST], "secretName": "api-public"}]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = of_kind(objects, "Service")[backend["name"]]
    assert backend["port"]["name"] in [p["name"] for p in service["spec"]["ports"]]
    secret = next(s for s in of_kind(objects, "Secret").values()
                  if s["type"] == "kubernetes.io/tls")
    cert = x509.load_pem_x509_certificate(decoded(secret, "tls.crt"))
    assert HOST in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    plain = render({**values, "orchestrator": {"tls": {"enabled": False,
                                                       "plaintextTokens": True}}})
    (ingress,) = of_kind(plain, "Ingress").values()
    assert ingress["metadata"]["annotations"][
        "nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    for missing in ({"enabled": True, "tlsSecret": "x"}, {"enabled": True, "host": HOST}):
        with pytest.raises(helm.HelmRenderError, match="required"):
            render({"ingress": missing})
    assert not of_kind(render(), "Ingress")


EXTENSIONS = {
    "podAnnotations": {"example.org/owner": "radiology"},
    "runtimeClassName": "gvisor",
    "priorityClassName": "clinical",
    "extraEnv": [{"name": "STYLEPROBE_TLS_CA_BUNDLE", "value": "/etc/styleprobe/ca/ca.pem"}],
    "extraVolumes": [{"name": "hospital-ca", "configMap": {"name": "hospital-ca"}}],
    "extraVolumeMounts": [{"name": "hospital-ca", "mountPath": "/etc/styleprobe/ca",
                           "readOnly": True}],
}


def test_extension_points_reach_every_workload() -> None:
    objects = render({"orchestrator": EXTENSIONS, "workers": {"gpu": EXTENSIONS,
                                                               "cpu": EXTENSIONS},
                      "triton": EXTENSIONS})
    validate(objects)
    for component in ("orchestrator", "worker-gpu", "worker-cpu", "triton"):
        workload = one(objects, "Deployment", component)
        template = workload["spec"]["template"]
        spec = template["spec"]
        assert template["metadata"]["annotations"]["example.org/owner"] == "radiology"
        assert (spec["runtimeClassName"], spec["priorityClassName"]) == ("gvisor", "clinical")
        assert EXTENSIONS["extraVolumes"][0] in spec["volumes"]
        container = spec["containers"][0]
        assert EXTENSIONS["extraVolumeMounts"][0] in container["volumeMounts"]
        assert env_of(container)["STYLEPROBE_TLS_CA_BUNDLE"] == "/etc/styleprobe/ca/ca.pem"
    default = render()
    spec = pod(default, "Deployment", "orchestrator")
    assert "runtimeClassName" not in spec and "priorityClassName" not in spec


def test_schema_checks_the_extension_points() -> None:
    for bad in ({"orchestrator": {"extraEnv": [{"value": "no name"}]}},
                {"workers": {"gpu": {"extraVolumeMounts": [{"name": "x"}]}}},
                {"triton": {"podAnnotations": {"a": 1}}},
                {"orchestrator": {"tls": {"enabled": True, "clientCA": "x"}}},
                {"ingress": {"enabled": True, "hosts": []}},
                {"secrets": {"redisPassword": "has spaces"}}):
        with pytest.raises(helm.HelmValuesError):
            render(bad)


def test_in_cluster_redis_requires_the_secrets_password() -> None:
    objects = render({"secrets": {"redisPassword": "S3cretRedis"}})
    secret = next(s for s in of_kind(objects, "Secret").values() if s["type"] == "Opaque")
    assert decoded(secret, "redis-password") == b"S3cretRedis"
    assert decoded(secret, "redis-url") == (
        f"redis://:S3cretRedis@{RELEASE}-styleprobe-redis:6379/0".encode())
    redis = one(objects, "StatefulSet", "redis")
    text = str(redis)
    assert "S3cretRedis" not in text  # read from the mounted Secret, never spelt out
    container = containers(redis)[0]
    assert "requirepass" in container["args"][0] and "/run/redis/auth.conf" in container["args"][0]
    assert "REDISCLI_AUTH" in container["readinessProbe"]["exec"]["command"][2]
    volumes = {v["name"]: v for v in redis["spec"]["template"]["spec"]["volumes"]}
    assert volumes["password"]["secret"]["items"] == [{"key": "redis-password",
                                                       "path": "redis-password"}]
    config = next(iter(of_kind(objects, "ConfigMap").values()))["data"]
    assert "STYLEPROBE_REDIS_URL" not in config
    for component in ("orchestrator", "worker-gpu", "worker-cpu"):
        env = env_of(containers(one(objects, "Deployment", component))[0])
        assert env["STYLEPROBE_REDIS_URL_FILE"] == "/run/secrets/styleprobe/redis-url"
    generated = render()
    secret = next(s for s in of_kind(generated, "Secret").values() if s["type"] == "Opaque")
    assert len(decoded(secret, "redis-password")) == 40


def test_lint_is_clean_with_tls_ingress_and_extensions() -> None:
    values = {"ingress": {"enabled": True, "host": HOST, "tlsSecret": "api-public"},
              "orchestrator": EXTENSIONS}
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_the_dicom_gateway_trusts_the_orchestrators_ca() -> None:
    objects = render({"gateway": {"enabled": True}})
    validate(objects)
    spec = pod(objects, "Deployment", "dicom-gateway")
    env = env_of(spec["containers"][0])
    assert env["STYLEPROBE_GATEWAY_TLS_CA"] == "/run/tls/ca.crt"
    volume = next(v for v in spec["volumes"] if v["name"] == "orchestrator-ca")
    assert volume["secret"]["secretName"] == f"{RELEASE}-styleprobe-tls"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    plain = render({"gateway": {"enabled": True},
                    "orchestrator": {"tls": {"enabled": False, "plaintextTokens": True}}})
    assert "STYLEPROBE_GATEWAY_TLS_CA" not in env_of(
        pod(plain, "Deployment", "dicom-gateway")["containers"][0])


def test_production_values_check_every_hop_against_the_hospital_ca() -> None:
    objects = render(production_values())
    assert not [s for s in of_kind(objects, "Secret").values()
                if s["type"] == "kubernetes.io/tls"]
    volume = next(v for v in pod(objects, "Deployment", "orchestrator")["volumes"]
                  if v["name"] == "tls")
    assert volume["secret"]["secretName"] == "styleprobe-api-tls"
    for component in ("orchestrator", "worker-gpu", "worker-cpu"):
        container = containers(one(objects, "Deployment", component))[0]
        bundle = env_of(container)["STYLEPROBE_TLS_CA_BUNDLE"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "hospital-ca")
        assert bundle.startswith(mount["mountPath"] + "/"), component
