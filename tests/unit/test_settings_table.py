"""The README's settings table is the one generated from ``styleprobe.config.Settings``."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from styleprobe.config import Settings

CHECKOUT = Path(__file__).resolve().parents[2]


def test_every_setting_is_described() -> None:
    undocumented = [f.name for f in fields(Settings) if not f.metadata.get("doc")]
    assert not undocumented, f"declare these with config.setting(default, doc): {undocumented}"


def test_readme_table_is_the_generated_one() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/settings_table.py", "--check", "README.md"], cwd=CHECKOUT,
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{done.stdout}{done.stderr}run make docs"
