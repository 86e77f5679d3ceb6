"""deploy/prometheus: promtool accepts the scrape configuration and the alert rules, and the
rules' unit tests (rules_test.yml) pass. promtool comes from Debian's ``prometheus``
package, which ``make test`` installs when it is missing."""

from __future__ import annotations

import subprocess

import pytest

import required
from styleprobe.config import REPO_ROOT

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"


@pytest.mark.parametrize("args", [
    ["check", "config", "prometheus.yml"],
    ["check", "rules", "rules.yml"],
    ["test", "rules", "rules_test.yml"],
])
def test_promtool_accepts(args: list[str]) -> None:
    promtool = required.program("promtool")
    done = subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
