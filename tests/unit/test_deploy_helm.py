"""The Helm chart renders, lints and validates offline, and wires the services as the code
reads them.

Rendered with the Helm v4 library (helm-python-sdk) for the default values and for
values-production.yaml; every object is checked with kubernetes-validate --strict against
the Kubernetes 1.30 schemas (the ServiceMonitor is a Prometheus Operator CRD, which those
schemas do not hold: its fields are checked here).
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from deploy_checks import api_service_name, host_port, setting_of, worker_queues

from styleprobe.config import REPO_ROOT, Settings

CHART = REPO_ROOT / "helm" / "styleprobe"
PRODUCTION = CHART / "values-production.yaml"
KUBERNETES = "1.30.0"
CRD_KINDS = {"ServiceMonitor"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
RELEASE = "sp"

Objects = list[dict[str, Any]]


def render(values: dict[str, Any] | None = None) -> Objects:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name=RELEASE, namespace="styleprobe",
                                 is_install=True)
    return [doc for name, text in sorted(manifests.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION.read_text())


@pytest.fixture(scope="module", params=["default", "production"])
def case(request: pytest.FixtureRequest) -> tuple[dict[str, Any], Objects]:
    """(the values given, the rendered objects) for the default and the production values."""
    values = production_values() if request.param == "production" else {}
    return values, render(values or None)


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects: Objects, kind: str, component: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind
             and o["metadata"]["labels"].get("app.kubernetes.io/component") == component]
    assert len(found) == 1, f"{len(found)} {kind} objects of component {component}"
    return found[0]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def merged_values(values: dict[str, Any]) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


# --- the chart as a whole ---------------------------------------------------------------

@pytest.mark.parametrize("values_file", [None, PRODUCTION], ids=["default", "production"])
def test_lint_is_clean(values_file: Path | None) -> None:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


def test_every_object_validates_against_kubernetes_1_30(case: tuple[dict, Objects]) -> None:
    _, objects = case
    failures = []
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except (kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError) as exc:
            failures.append(f"{obj['kind']} {obj['metadata']['name']}: {exc}")
    assert not failures, "\n".join(failures)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap",
                                            "HorizontalPodAutoscaler", "PodDisruptionBudget",
                                            "NetworkPolicy", "ServiceAccount"}


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = copy.deepcopy(one(render(), "Deployment", "orchestrator"))
    containers(deployment)[0]["readinesProbe"] = containers(deployment)[0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_schema_refuses_bad_values() -> None:
    for bad in ({"workers": {"gpux": {}}}, {"settings": {"TRITON_URL": "x"}},
                {"triton": {"gpus": 0}}, {"orchestrator": {"service": {"type": "Ingress"}}}):
        with pytest.raises(helm.HelmValuesError):
            render(bad)


# --- security, probes, resources ------------------------------------------------------------

def test_pods_run_unprivileged_on_a_read_only_root(case: tuple[dict, Objects]) -> None:
    _, objects = case
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


def test_secrets_reach_the_processes_as_files_only(case: tuple[dict, Objects]) -> None:
    _, objects = case
    for workload in of_kind(objects, "Deployment").values():
        for container in containers(workload):
            for variable in container.get("env", []):
                assert "valueFrom" not in variable, variable
            mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
            files = [v["value"] for v in container.get("env", [])
                     if v["name"].endswith("_FILE")]
            volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
            for path in files:
                folder, key = path.rsplit("/", 1)
                volume = next(n for n, p in mounts.items() if p == folder)
                assert key in [i["path"] for i in volumes[volume]["secret"]["items"]], path


def test_orchestrator_probes_are_native_grpc(case: tuple[dict, Objects]) -> None:
    _, objects = case
    container = containers(one(objects, "Deployment", "orchestrator"))[0]
    # the plaintext health-only listener (Kubernetes' gRPC probes speak no TLS)
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    listen = {v["name"]: v.get("value") for v in container["env"]}
    assert host_port(listen["STYLEPROBE_GRPC_HEALTH_LISTEN"])[1] == port
    assert container["readinessProbe"]["grpc"] == {"port": port, "service": api_service_name()}
    assert container["livenessProbe"]["tcpSocket"]["port"] == "grpc"
    assert "startupProbe" in container


def test_triton_has_startup_ready_and_live_http_probes(case: tuple[dict, Objects]) -> None:
    _, objects = case
    container = containers(one(objects, "Deployment", "triton"))[0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["startupProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def test_workers_probe_their_own_node(case: tuple[dict, Objects]) -> None:
    _, objects = case
    for queue in worker_queues():
        container = containers(one(objects, "Deployment", f"worker-{queue}"))[0]
        args = container["args"]
        assert args[:2] == ["serve", "worker"]
        assert args[args.index("--queues") + 1] == queue
        node = args[args.index("--name") + 1]
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["exec"]["command"] == [
                "python", "-m", "styleprobe.healthcheck", "worker", "--name", node]


def test_triton_gets_gpus_shared_memory_and_gpu_nodes(case: tuple[dict, Objects]) -> None:
    values, objects = case
    triton = merged_values(values)["triton"]
    pod = one(objects, "Deployment", "triton")["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == triton["gpus"] >= 1
    assert resources["requests"]["nvidia.com/gpu"] == triton["gpus"]
    assert pod["nodeSelector"] == triton["nodeSelector"]
    assert pod["tolerations"] == triton["tolerations"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    for component in ("orchestrator", *(f"worker-{q}" for q in worker_queues())):
        for container in containers(one(objects, "Deployment", component)):
            assert "nvidia.com/gpu" not in container["resources"]["limits"]


# --- scaling and disruption -----------------------------------------------------------------

def test_workers_and_triton_autoscale(case: tuple[dict, Objects]) -> None:
    values, objects = case
    deployments = of_kind(objects, "Deployment")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(objects,
                                                                   "HorizontalPodAutoscaler").values()}
    for component in ("triton", *(f"worker-{q}" for q in worker_queues())):
        name = one(objects, "Deployment", component)["metadata"]["name"]
        assert name in hpas and name in deployments, component
        assert hpas[name]["apiVersion"] == "autoscaling/v2"
        assert "replicas" not in deployments[name]["spec"]  # the HPA owns it
    triton = hpas[one(objects, "Deployment", "triton")["metadata"]["name"]]
    queue_time = merged_values(values)["triton"]["autoscaling"]["queueTime"]
    metric = triton["spec"]["metrics"][0]
    if queue_time["enabled"]:
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] == queue_time["metricName"]
    else:
        assert metric == {"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}


def test_every_deployment_has_a_matching_disruption_budget(case: tuple[dict, Objects]) -> None:
    _, objects = case
    budgets = [p["spec"]["selector"]["matchLabels"] for p in of_kind(objects,
                                                                     "PodDisruptionBudget").values()]
    for deployment in of_kind(objects, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if b.items() <= labels.items()]
        assert len(matching) == 1, deployment["metadata"]["name"]


# --- network -------------------------------------------------------------------------------

def test_only_the_orchestrator_is_reachable_from_outside(case: tuple[dict, Objects]) -> None:
    _, objects = case
    policies = of_kind(objects, "NetworkPolicy")
    deny = next(p for p in policies.values() if "ingress" not in p["spec"])
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in objects
            if w["kind"] in WORKLOAD_KINDS]
    for labels in pods:  # every pod of the release is under the default deny
        assert deny["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    open_to_anyone, inside_only = [], []
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            ports = [p["port"] for p in rule["ports"]]
            if not peers:
                open_to_anyone.append((policy["spec"]["podSelector"]["matchLabels"]
                                       ["app.kubernetes.io/component"], ports))
            elif all(set(peer) == {"podSelector"} for peer in peers):
                inside_only.append(policy["metadata"]["name"])
    orchestrator = policies[f"{RELEASE}-styleprobe-orchestrator"]["spec"]["ingress"][0]
    assert orchestrator["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert open_to_anyone in ([], [("orchestrator", ["grpc"])])
    assert f"{RELEASE}-styleprobe-triton" in inside_only
    services = of_kind(objects, "Service")
    assert all(s["spec"].get("type", "ClusterIP") == "ClusterIP" for s in services.values()
               if s["metadata"]["labels"]["app.kubernetes.io/component"] != "orchestrator")


def test_service_monitor_scrapes_every_metrics_port() -> None:
    objects = render(production_values())
    monitor = next(o for o in objects if o["kind"] == "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = {s["metadata"]["labels"]["app.kubernetes.io/component"]
               for s in of_kind(objects, "Service").values()
               if selector.items() <= s["metadata"]["labels"].items()
               and "metrics" in [p["name"] for p in s["spec"]["ports"]]}
    assert scraped == {"orchestrator", "triton", *(f"worker-{q}" for q in worker_queues())}


# --- what the code reads -----------------------------------------------------------------

def test_settings_and_addresses_agree_with_the_code(case: tuple[dict, Objects]) -> None:
    values, objects = case
    merged = merged_values(values)
    config = next(iter(of_kind(objects, "ConfigMap").values()))["data"]
    fields = {setting_of(name) for name in config}
    assert Settings.from_env(config)  # every value converts to its field's type
    assert {"backend", "triton_url", "store", "s3_endpoint", "grpc_listen"} <= fields
    assert config["STYLEPROBE_BACKEND"] == "triton"
    for key in merged["settings"]:
        setting_of(key)
    services = of_kind(objects, "Service")

    def service_port(host: str, port: int) -> str:
        assert host in services, f"no Service {host}"
        named = {p["port"]: p["name"] for p in services[host]["spec"]["ports"]}
        assert port in named, f"Service {host} has no port {port}"
        return named[port]

    assert service_port(*host_port(config["STYLEPROBE_TRITON_URL"])) == "grpc"
    if merged["redis"]["enabled"]:  # its URL, with its password, only in the Secret
        assert "STYLEPROBE_REDIS_URL" not in config
        for secret in of_kind(objects, "Secret").values():
            if "redis-url" in secret["data"]:
                url = base64.b64decode(secret["data"]["redis-url"]).decode()
                assert service_port(*host_port(url)) == "redis"
    if merged["minio"]["enabled"]:
        assert service_port(*host_port(config["STYLEPROBE_S3_ENDPOINT"])) == "s3"
    orchestrator = containers(one(objects, "Deployment", "orchestrator"))[0]
    ports = {p["name"]: p["containerPort"] for p in orchestrator["ports"]}
    assert host_port(config["STYLEPROBE_GRPC_LISTEN"])[1] == ports["grpc"]
    workers = [containers(one(objects, "Deployment", f"worker-{q}"))[0] for q in worker_queues()]
    for container, port_setting in [(orchestrator, "metrics_port"),
                                    *((w, "worker_metrics_port") for w in workers)]:
        assert container["envFrom"] == [{"configMapRef": {"name": f"{RELEASE}-styleprobe"}}]
        env = {setting_of(v["name"]): v.get("value") for v in container["env"]
               if v["name"].startswith("STYLEPROBE_")}
        metrics = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
        assert int(env[port_setting]) == metrics
    assert set(merged["workers"]) == worker_queues()


def test_existing_secret_replaces_the_charts_own() -> None:
    objects = render({"secrets": {"existingSecret": "mine"}})
    assert [s["type"] for s in of_kind(objects, "Secret").values()] == [
        "kubernetes.io/tls"]  # only the orchestrator's generated certificate
    for workload in (o for o in objects if o["kind"] in WORKLOAD_KINDS):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume and volume["name"] != "tls":
                assert volume["secret"]["secretName"] == "mine"


def test_external_servers_need_their_addresses() -> None:
    for values, missing in (({"redis": {"enabled": False}}, "redis.url"),
                            ({"minio": {"enabled": False}}, "minio.endpoint")):
        with pytest.raises(helm.HelmRenderError, match=missing.replace(".", r"\.")):
            render(values)
    objects = render({"redis": {"enabled": False, "url": "redis://redis.example:6379/2"},
                      "minio": {"enabled": False, "endpoint": "s3.example:443", "secure": True}})
    config = next(iter(of_kind(objects, "ConfigMap").values()))["data"]
    assert config["STYLEPROBE_REDIS_URL"] == "redis://redis.example:6379/2"
    assert config["STYLEPROBE_S3_ENDPOINT"] == "s3.example:443"
    assert not [o for o in objects if o["kind"] == "StatefulSet"]


def test_a_shared_model_repository_is_mounted_read_only_everywhere() -> None:
    objects = render({"modelRepository": {"existingClaim": "models"}})
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    workloads = [one(objects, "Deployment", c) for c in ("triton", "orchestrator")]
    workloads += [w for w in of_kind(objects, "Deployment").values()
                  if "worker" in w["metadata"]["labels"]["app.kubernetes.io/component"]]
    assert len(workloads) >= 3
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert {"name": "model-repository",
                "persistentVolumeClaim": {"claimName": "models"}} in pod["volumes"]
        for container in pod["containers"]:
            assert {"name": "model-repository", "mountPath": "/models",
                    "readOnly": True} in container["volumeMounts"]
            if container["name"] != "tritonserver":
                assert {"name": "STYLEPROBE_MODEL_REPOSITORY",
                        "value": "/models"} in container["env"]
    (seed,) = one(objects, "Deployment", "triton")["spec"]["template"]["spec"][
        "initContainers"]
    assert seed["command"] == ["cp", "-Rn", "/models/.", "/model-repository/"]
    for workload in render():  # default: the images' own repositories
        assert "model-repository" not in json.dumps(workload)
