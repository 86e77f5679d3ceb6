"""docker-compose.yml and its CPU override: valid compose files that wire the services as
the code reads them (no Docker engine needed).

The files are checked against the compose specification with ``check-jsonschema
--builtin-schema vendor.compose-spec``; the Prometheus configuration the compose file
mounts is checked with ``promtool check config``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import host_port, setting_of, worker_queues

import required
from styleprobe.config import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yml"
CPU_OVERRIDE = REPO_ROOT / "docker-compose.cpu.yml"
APP_DOCKERFILE = "deploy/docker/Dockerfile"
TRITON_DOCKERFILE = REPO_ROOT / "deploy" / "docker" / "triton.Dockerfile"
SECRETS_DIR = "/run/secrets/"

Service = dict[str, Any]


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def merge(base: Any, override: Any) -> Any:
    """Compose's merge for what the override uses: mappings merge key by key, the rest is
    replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override}
    return override


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


@pytest.fixture(scope="module")
def cpu_compose(compose: dict[str, Any]) -> dict[str, Any]:
    return merge(compose, load(CPU_OVERRIDE))


def app_services(project: dict[str, Any]) -> dict[str, Service]:
    """The services that run the StyleProbe image (the orchestrator and the workers)."""
    return {name: s for name, s in project["services"].items()
            if s.get("build", {}).get("dockerfile") == APP_DOCKERFILE}


def variables_of(service: Service) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items() if k.startswith("STYLEPROBE_")}


def settings_of(service: Service) -> Settings:
    """The service's settings, but for secrets (files that exist only in the container)."""
    return Settings.from_env({k: v for k, v in variables_of(service).items()
                              if not k.endswith("_FILE")})


def argument(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def published(service: Service) -> set[int]:
    return {int(str(p).rsplit(":", 1)[0].rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def triton_grpc_port() -> int:
    match = re.search(r'"--grpc-port=(\d+)"', TRITON_DOCKERFILE.read_text())
    assert match, "triton.Dockerfile sets no --grpc-port"
    return int(match.group(1))


def test_compose_files_match_the_compose_specification() -> None:
    tool = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(tool), "--builtin-schema", "vendor.compose-spec",
                             str(COMPOSE), str(CPU_OVERRIDE)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
    assert set(load(CPU_OVERRIDE)["services"]) <= set(compose["services"])


def test_services_start_after_what_they_need_is_healthy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            if services[needed].get("restart") == "no":  # a one-shot step
                assert how["condition"] == "service_completed_successfully", (name, needed)
            else:
                assert how["condition"] == "service_healthy", (name, needed)
    for name in app_services(compose):
        assert {"redis", "minio-init", "triton"} <= set(services[name]["depends_on"]), name


def test_settings_and_addresses_agree_with_the_code(compose: dict[str, Any]) -> None:
    services, secrets = compose["services"], compose["secrets"]
    apps = app_services(compose)
    assert {"orchestrator", "worker-gpu", "worker-cpu"} <= set(apps)
    for name, service in apps.items():
        for variable, value in variables_of(service).items():
            setting_of(variable)
            if variable.endswith("_FILE"):  # a secret file: mounted into this service
                assert value.startswith(SECRETS_DIR), (name, variable)
                secret = value.removeprefix(SECRETS_DIR)
                assert secret in service["secrets"] and secret in secrets, (name, secret)
        settings = settings_of(service)
        assert (settings.backend, settings.store) == ("triton", "s3")
        triton_host, triton_port = host_port(settings.triton_url)
        assert triton_host == "triton" and triton_port == triton_grpc_port()
        redis_host, redis_port = host_port(settings.redis_url)
        assert "redis" in services[redis_host]["image"] and redis_port == 6379
        s3_host, s3_port = host_port(settings.s3_endpoint)
        minio = services[s3_host]["command"]
        assert argument(minio, "--address") == f":{s3_port}"
        assert s3_port in published(services[s3_host])  # presigned URLs are fetched there
        bucket = re.search(r"mc mb --ignore-existing \w+/(\S+)",
                           services["minio-init"]["command"][0])
        assert bucket and bucket.group(1) == settings.s3_bucket
    orchestrator = settings_of(apps["orchestrator"])
    assert host_port(orchestrator.grpc_listen)[1] in published(apps["orchestrator"])
    assert {8000, triton_grpc_port(), 8002} <= published(services["triton"])
    assert "redis" not in {s for s in services if published(services[s])}


def test_redis_persists_and_never_evicts(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert argument(command, "--appendonly") == "yes"
    assert argument(command, "--maxmemory-policy") == "noeviction"
    assert any(v.endswith(":/data") for v in compose["services"]["redis"]["volumes"])


def test_triton_reserves_a_gpu_and_shared_memory(compose: dict[str, Any]) -> None:
    triton = compose["services"]["triton"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert triton["shm_size"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])


def test_workers_cover_every_queue_and_check_their_own_node(compose: dict[str, Any]) -> None:
    queues = set()
    for name, service in app_services(compose).items():
        command = service["command"]
        if command[:2] != ["serve", "worker"]:
            assert command == ["serve", "orchestrator"], name
            continue
        queues |= set(argument(command, "--queues").split(","))
        assert service["healthcheck"]["test"][-2:] == ["--name", argument(command, "--name")]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] in service["tmpfs"]
    assert queues == worker_queues()


def test_cpu_override_runs_without_triton(cpu_compose: dict[str, Any]) -> None:
    assert cpu_compose["services"]["triton"]["profiles"] == ["gpu"]  # not started by default
    for name, service in cpu_compose["services"].items():
        triton = service.get("depends_on", {}).get("triton")
        assert triton is None or triton["required"] is False, name
    for name, service in app_services(cpu_compose).items():
        assert settings_of(service).backend == "local", name


def test_secret_files_are_documented_and_ignored(compose: dict[str, Any]) -> None:
    readme = (REPO_ROOT / "deploy" / "secrets" / "README.md").read_text()
    for name, secret in compose["secrets"].items():
        path = (REPO_ROOT / secret["file"]).resolve()
        assert path.parent == REPO_ROOT / "deploy" / "secrets", name
        assert f"deploy/secrets/{path.name}" in readme, name
    ignored = subprocess.run(["git", "check-ignore", "-q", "deploy/secrets/api_tokens"],
                             cwd=REPO_ROOT, timeout=30)
    assert ignored.returncode == 0


def mounted(service: Service, target: str) -> Path:
    """The host folder that a service mounts at ``target``."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (REPO_ROOT / source).resolve()
    raise AssertionError(f"nothing is mounted at {target}")


def test_prometheus_config_the_compose_file_mounts_passes_promtool(
        compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    config = next(a.split("=", 1)[1] for a in prometheus["command"]
                  if a.startswith("--config.file="))
    folder = mounted(prometheus, str(Path(config).parent))
    promtool = required.program("promtool")
    result = subprocess.run([promtool, "check", "config", Path(config).name], cwd=folder,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    targets = set(re.findall(r"[\w.-]+:\d+", (folder / Path(config).name).read_text()))
    apps = app_services(compose)
    expected = {"triton:8002"}
    for name, service in apps.items():
        env = settings_of(service)
        port = env.metrics_port if name == "orchestrator" else env.worker_metrics_port
        expected.add(f"{name}:{port}")
    assert expected <= targets, f"not scraped: {sorted(expected - targets)}"


def test_grafana_gets_the_dashboards_and_the_prometheus_of_the_compose_file(
        compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provisioning = mounted(grafana, "/etc/grafana/provisioning")
    files = [yaml.safe_load(p.read_text()) for p in sorted(provisioning.rglob("*.y*ml"))]
    folders = [provider["options"]["path"] for f in files for provider in f.get("providers", [])]
    assert folders and all(list(mounted(grafana, folder).glob("*.json")) for folder in folders)
    sources = [source["url"] for f in files for source in f.get("datasources", [])]
    prometheus = compose["services"]["prometheus"]
    assert sources == [f"http://prometheus:{port}" for port in published(prometheus)]


def test_readme_has_the_deploy_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy"):]
    for command in ("docker compose up", "docker-compose.cpu.yml", "helm upgrade --install",
                    "values-production.yaml"):
        assert command in section, command
