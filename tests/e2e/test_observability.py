"""Observability on the real service (see conftest.py): after one real job the metrics
endpoints of the orchestrator and of both workers serve the series docs/metrics.md
documents, with the job counted; a real Prometheus (Debian's) scrapes them and Triton
with the repository's scrape configuration and alert rules; and the service's JSON logs
carry the job and request ids but never the DICOM patient's name or id."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pydicom
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file

import required
from styleprobe.api import pb, rpc
from styleprobe.config import REPO_ROOT
from styleprobe.explain.engine import STAGE_NAMES
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess
from styleprobe.testing.stack import ServiceStack

DICOM = Path(get_testdata_file("CT_small.dcm"))
# A probe seed of its own: this job probes its direction (the direction stage is timed).
PROBE = pb.ProbeOptions(samples=400, seed=31)
COHORT_ONLY = {"styleprobe_cohort_images_total"}  # recorded by cohort jobs, not this one
WAIT_S = 150.0
# Dashboard queries with no data on this stack: no cohort has run, and Triton has no GPU.
NO_DATA_HERE = re.compile(r"styleprobe_cohort_images_total|nv_gpu_")


def documented_series() -> set[str]:
    text = (REPO_ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"^\| `(styleprobe_\w+)` \| \w+ \|", text, re.MULTILINE))


def dashboard_queries() -> list[str]:
    dashboard = json.loads((REPO_ROOT / "deploy/grafana/dashboards/styleprobe.json").read_text())
    return [target["expr"] for panel in dashboard["panels"]
            for target in panel.get("targets", [])]


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def series_of(page: str) -> set[str]:
    return set(re.findall(r"^# TYPE (styleprobe_\w+) \w+$", page, re.MULTILINE))


def value(page: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly these labels, 0 if it is not served."""
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.fixture(scope="module")
def job(stack: ServiceStack, channel: grpc.Channel) -> Iterator[tuple[pb.Job, str]]:
    """One DICOM explained through the service, sent with a request id; (job, request id)."""
    stub = rpc.StyleProbeStub(channel)
    request_id = f"obs-{uuid.uuid4().hex[:8]}"
    metadata = (("authorization", f"Bearer {stack.token}"), ("x-request-id", request_id))
    queued = stub.Explain(pb.ExplainRequest(
        image_bytes=DICOM.read_bytes(), filename="patient.dcm", model_set="tiny",
        lambdas="-2:2:5", options=pb.ExplainOptions(probe=PROBE)),
        metadata=metadata, timeout=30)
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=queued.job_id),
                                metadata=metadata, timeout=WAIT_S))
    final = events[-1].job
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    yield final, request_id


def test_orchestrator_and_workers_serve_the_documented_series(
        stack: ServiceStack, job: tuple[pb.Job, str]) -> None:
    pages = {name: http_text(url) for name, url in stack.metrics_urls.items()}
    orchestrator = pages.pop("orchestrator")
    assert len(pages) >= 2  # both workers
    served = series_of(orchestrator).union(*map(series_of, pages.values()))
    assert served - COHORT_ONLY == documented_series() - COHORT_ONLY

    # the orchestrator: the calls, the queued job, the health loop
    def rpc_calls(method: str) -> float:
        return value(orchestrator, "styleprobe_grpc_requests_total",
                     method=f"/styleprobe.v1.StyleProbe/{method}", code="OK")

    assert rpc_calls("Explain") >= 1 and rpc_calls("WatchJob") >= 1
    assert value(orchestrator, "styleprobe_grpc_request_duration_seconds_count",
                 method="/styleprobe.v1.StyleProbe/Explain") >= 1
    assert value(orchestrator, "styleprobe_jobs_total", kind="explain", state="queued") >= 1
    for dependency in ("redis", "s3", "triton"):
        assert value(orchestrator, "styleprobe_dependency_ready", dependency=dependency) == 1
    for queue in ("gpu", "cpu"):
        assert f'queue="{queue}"' in orchestrator
    assert value(orchestrator, "styleprobe_stage_duration_seconds_count", stage="input") >= 1

    # the workers, summed over both: the job ran and succeeded, every stage timed, Triton
    # called, images generated
    def total(name: str, **labels: str) -> float:
        return sum(value(page, name, **labels) for page in pages.values())

    assert total("styleprobe_jobs_total", kind="explain", state="running") >= 1
    assert total("styleprobe_jobs_total", kind="explain", state="succeeded") >= 1
    for stage in STAGE_NAMES:
        assert total("styleprobe_stage_duration_seconds_count", stage=stage) >= 1, stage
    for model in ("mapping", "encoder", "classifier", "decode"):
        assert total("styleprobe_backend_call_duration_seconds_count", model=model) >= 1
        assert total("styleprobe_backend_call_batch_size_count", model=model) >= 1
    assert total("styleprobe_images_generated_total") >= 5  # at least the λ grid


def test_prometheus_scrapes_the_service_and_triton_with_the_repository_config(
        stack: ServiceStack, triton: TritonProcess, job: tuple[pb.Job, str],
        tmp_path: Path) -> None:
    prometheus = required.program("prometheus")
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text())
    hosts = {name: urllib.parse.urlsplit(url).netloc
             for name, url in stack.metrics_urls.items()}
    targets = {"styleprobe-orchestrator": [hosts.pop("orchestrator")],
               "styleprobe-worker": sorted(hosts.values()),
               "triton": [urllib.parse.urlsplit(triton.metrics_url).netloc]}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for scrape in config["scrape_configs"]:
        scrape["static_configs"] = [{"targets": targets[scrape["job_name"]]}]
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(REPO_ROOT / "deploy/prometheus" / name)
                            for name in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    web = f"127.0.0.1:{free_port()}"

    def api(path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return json.loads(http_text(f"http://{web}/api/v1/{path}{query}"))["data"]

    def ready() -> bool:
        try:
            return "ready" in http_text(f"http://{web}/-/ready").lower()
        except OSError:
            return False

    server = ServerProcess(
        "prometheus", [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address={web}"],
        ready, tmp_path / "prometheus.log")
    server.start(timeout_s=60)
    try:
        expected = sum(len(t) for t in targets.values())

        def scraped() -> list[dict]:
            return api("query", query='up == 1 and on (job) (sum by (job) '
                                      '(scrape_samples_scraped) > 0)')["result"]

        deadline = time.monotonic() + 30
        while len(scraped()) < expected and time.monotonic() < deadline:
            time.sleep(0.5)
        up = {(r["metric"]["job"], r["metric"]["instance"]) for r in scraped()}
        assert up == {(name, host) for name, hosts_ in targets.items() for host in hosts_}
        succeeded = api("query", query='sum(styleprobe_jobs_total{state="succeeded"})')
        assert float(succeeded["result"][0]["value"][1]) >= 1
        assert api("query", query="nv_inference_count")["result"]  # Triton's own series
        # every query of the Grafana dashboard is valid, and has data where this job made
        # it (a rate needs two scrapes of each target)
        deadline = time.monotonic() + 30
        for expr in dashboard_queries():
            query = expr.replace("$__rate_interval", "1m")
            result = api("query", query=query)["result"]  # an invalid query: HTTP 400
            if NO_DATA_HERE.search(expr):
                continue
            while not result and time.monotonic() < deadline:
                time.sleep(0.5)
                result = api("query", query=query)["result"]
            assert result, f"no data for the dashboard's {expr}"
        rules = {rule["name"]: rule for group in api("rules")["groups"]
                 for rule in group["rules"]}
        assert set(rules) == {"StyleProbeJobFailureRate", "StyleProbeQueueBacklog",
                              "StyleProbeTritonNotReady", "StyleProbeRetentionFailing"}
        assert all(rule["health"] != "err" for rule in rules.values())
        assert rules["StyleProbeTritonNotReady"]["state"] == "inactive"
    finally:
        server.stop()


def test_logs_carry_job_and_request_ids_and_no_patient_data(
        stack: ServiceStack, job: tuple[pb.Job, str]) -> None:
    final, request_id = job
    header = pydicom.dcmread(DICOM)
    secrets = {str(header.PatientName), str(header.PatientID)}
    assert all(secrets)
    processes = [stack.orchestrator, *stack.workers.values()]
    logs = {p.name: p.log_path.read_text(errors="replace") for p in processes if p}
    for name, text in logs.items():
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{name}'s log holds patient data"
    lines = [json.loads(line) for text in logs.values() for line in text.splitlines()
             if line.startswith("{")]
    ours = [line for line in lines if line.get("job_id") == final.job_id]
    queued = [line for line in ours if line["message"] == "job queued"]
    assert [line.get("request_id") for line in queued] == [request_id]
    assert {line["message"] for line in ours} >= {"job queued", "stage done"}
    rpcs = [line for line in lines if line.get("request_id") == request_id
            and line["message"] == "rpc"]
    assert {line["method"] for line in rpcs} == {"/styleprobe.v1.StyleProbe/Explain",
                                                 "/styleprobe.v1.StyleProbe/WatchJob"}
