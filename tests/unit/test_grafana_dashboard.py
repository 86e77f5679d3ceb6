"""deploy/grafana: the dashboard queries only documented series (docs/metrics.md), every
query is valid PromQL (promtool parses it), and the data source it names is provisioned."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import required
from styleprobe.config import REPO_ROOT

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "styleprobe.json"
HISTOGRAM_SUFFIXES = re.compile(r"_(bucket|sum|count)$")


def panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_dashboard_queries_documented_series_from_the_provisioned_source() -> None:
    docs = (REPO_ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `((?:styleprobe|nv)_\w+)`", docs, re.MULTILINE))
    documented |= set(re.findall(r"`(nv_\w+)`", docs))
    used = {HISTOGRAM_SUFFIXES.sub("", name) if name.startswith("styleprobe_") else name
            for expr in expressions() for name in re.findall(r"\b(?:styleprobe|nv)_\w+", expr)}
    assert used - documented == set()
    assert {"styleprobe_stage_duration_seconds", "nv_inference_exec_count"} <= used

    provisioned = (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"^\s*uid:\s*(\S+)", provisioned, re.MULTILINE).group(1)
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"], panel["title"]
    ids = [p["id"] for p in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))
    dashboards = (GRAFANA / "provisioning" / "dashboards" / "styleprobe.yml").read_text()
    assert "path: /var/lib/grafana/dashboards" in dashboards


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = required.program("promtool")
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, expr in enumerate(expressions())]}]}
    path = tmp_path / "queries.yml"
    path.write_text(json.dumps(rules))  # YAML is a superset of JSON
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
