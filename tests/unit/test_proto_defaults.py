"""The defaults and ranges the proto's comments document are the server's own
(:mod:`styleprobe.explain.spec` and the settings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from styleprobe.config import Settings
from styleprobe.explain.spec import LambdaGrid, ProbeSettings, SearchSettings

PROTO = Path(__file__).resolve().parents[2] / "protos" / "styleprobe" / "v1" / "styleprobe.proto"


def field_comment(message: str, name: str) -> str:
    """The comment lines right above field ``name`` of ``message``, joined with spaces."""
    text = PROTO.read_text()
    body = re.search(rf"^message {message} {{\n(.*?)^}}", text, re.S | re.M)
    assert body, f"no message {message} in {PROTO}"
    lines = body.group(1).splitlines()
    index = next(i for i, line in enumerate(lines)
                 if re.match(rf"\s*[\w.]+ {name} = \d+;", line))
    comment: list[str] = []
    for line in reversed(lines[:index]):
        if not line.strip().startswith("//"):
            break
        comment.insert(0, line.strip().removeprefix("//").strip())
    return " ".join(comment)


probe, search, grid = ProbeSettings(), SearchSettings(), LambdaGrid()


@pytest.mark.parametrize(("message", "name", "phrases"), [
    ("ExplainRequest", "lambdas", [
        f'empty: "{grid}"', f"[-{grid.MAX_ABS:g}, {grid.MAX_ABS:g}]",
        f"{grid.MIN_STEPS}..{grid.MAX_STEPS} steps"]),
    ("ExplainOptions", "search_rounds", [f"(1..{search.MAX_ROUNDS}); 0: {search.rounds}."]),
    ("ExplainOptions", "search_points", [
        f"({search.MIN_POINTS}..{search.MAX_POINTS}); 0: {search.points}."]),
    ("ProbeOptions", "samples", [
        f"({probe.MIN_SAMPLES}..{probe.MAX_SAMPLES})",
        f"STYLEPROBE_PROBE_SAMPLES ({Settings().probe_samples} unless configured)"]),
    ("ProbeOptions", "seed", [f"(0..{probe.MAX_SEED}); {probe.seed} is a seed"]),
    ("ProbeOptions", "truncation_psi", [f"in (0, 1]; 0: {probe.truncation_psi:g} (none)"]),
    ("ProbeOptions", "test_fraction", [f"in [0.05, 0.5]; 0: {probe.test_fraction:g}."]),
    ("ProbeOptions", "regularization", [
        f"in [{probe.MIN_REGULARIZATION:g}, {probe.MAX_REGULARIZATION:g}]; 0: "
        f"{probe.regularization:g}."]),
])
def test_the_proto_documents_the_servers_defaults(message: str, name: str,
                                                  phrases: list[str]) -> None:
    comment = field_comment(message, name)
    for phrase in phrases:
        assert phrase in comment, f"{message}.{name}: {phrase!r} not in {comment!r}"
