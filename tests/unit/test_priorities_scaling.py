"""Workers scale on their queue's depth: with workers.<queue>.keda.enabled the chart
renders a KEDA ScaledObject (on the orchestrator's queue-depth gauge, which sums every
priority list of the queue) in place of the queue's HPA; everything else stays valid."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from styleprobe.config import REPO_ROOT
from styleprobe.worker.app import QUEUES

CHART = REPO_ROOT / "helm" / "styleprobe"
KUBERNETES = "1.30.0"
PROMETHEUS = "http://prometheus-operated.monitoring:9090"


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values=values, name="sp", namespace="styleprobe",
                                 is_install=True)
    return [doc for name, text in sorted(manifests.items()) if name.endswith(".yaml")
            for doc in yaml.safe_load_all(text) if doc]


def keda(queue: str, **settings: Any) -> dict[str, Any]:
    return {"workers": {queue: {"keda": {"enabled": True, "prometheusServer": PROMETHEUS,
                                         **settings}}}}


def test_off_by_default() -> None:
    assert not [o for o in render({}) if o["kind"] == "ScaledObject"]


def test_a_scaled_object_replaces_the_queues_hpa() -> None:
    objects = render(keda("gpu", tasksPerReplica=3))
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    assert len(scaled) == 1
    gpu = scaled[0]
    assert gpu["apiVersion"] == "keda.sh/v1alpha1"
    target = gpu["spec"]["scaleTargetRef"]["name"]
    hpa_targets = {o["spec"]["scaleTargetRef"]["name"] for o in objects
                   if o["kind"] == "HorizontalPodAutoscaler"}
    assert target.endswith("worker-gpu") and target not in hpa_targets  # one owner only
    assert any(t.endswith("worker-cpu") for t in hpa_targets)
    deployment = next(o for o in objects if o["kind"] == "Deployment"
                      and o["metadata"]["name"] == target)
    assert "replicas" not in deployment["spec"]
    assert (gpu["spec"]["minReplicaCount"], gpu["spec"]["maxReplicaCount"]) == (2, 8)
    depth, cpu = gpu["spec"]["triggers"]
    assert depth["type"] == "prometheus" and depth["metadata"]["threshold"] == "3"
    assert depth["metadata"]["serverAddress"] == PROMETHEUS
    assert depth["metadata"]["query"] == (
        'max(styleprobe_queue_depth{queue="gpu", namespace="styleprobe"})')
    assert cpu == {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}
    for obj in objects:
        if obj["kind"] != "ScaledObject":  # a CRD: no schema offline
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)


@pytest.mark.parametrize("queue", QUEUES)
def test_every_queue_can_scale_on_depth(queue: str) -> None:
    scaled = [o for o in render(keda(queue)) if o["kind"] == "ScaledObject"]
    names = [o["spec"]["scaleTargetRef"]["name"] for o in scaled]
    assert names == [f"sp-styleprobe-worker-{queue}"]


def test_bad_keda_values_are_refused() -> None:
    with pytest.raises(helm.HelmValuesError):
        render(keda("gpu", tasksPerReplica=0))
    with pytest.raises(helm.HelmValuesError):
        render(keda("gpu", listName="gpu"))  # no such setting
    with pytest.raises(Exception, match="prometheusServer"):
        render({"workers": {"gpu": {"keda": {"enabled": True}}}})
