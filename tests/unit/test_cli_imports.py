"""Building the command line imports no metrics: ``serve worker`` must prepare
``PROMETHEUS_MULTIPROC_DIR`` before prometheus-client is first imported."""

from __future__ import annotations

import subprocess
import sys


def test_the_cli_parser_imports_no_metrics() -> None:
    code = ("import sys; from styleprobe.cli import build_parser; build_parser(); "
            "loaded = [m for m in ('prometheus_client', 'styleprobe.metrics') "
            "if m in sys.modules]; "
            "sys.exit(f'imported at parse time: {loaded}' if loaded else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
