"""Multi-process GAN training: ``styleprobe train gan`` started by torchrun in two CPU
processes (gloo) computes what one process computes on the same global batch.

The two runs share every random draw but the noise inputs (each process draws its own,
for its rows), which StyleGAN2 starts at strength zero: after one iteration every weight
but the noise strengths must agree to float precision; after three, everything within a
tolerance that the noise strengths' first steps (lr-sized) explain.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from styleprobe.training.checkpoint import load_checkpoint

GAN = ["--data", "knee", "--n", "64", "--resolution", "16", "--w-dim", "16",
       "--mapping-layers", "1", "--channel-base", "64", "--channel-max", "16",
       "--batch", "16", "--ada", "on", "--checkpoint-every", "1000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(out: Path, iterations: int, processes: int) -> dict:
    cli = ["--threads", "1", "train", "gan", *GAN, "--iterations", str(iterations),
           "--out", str(out)]
    launcher = (["-m", "styleprobe.cli"] if processes == 1 else
                ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
                 str(processes), "--master-addr", "127.0.0.1", "--master-port",
                 str(_free_port()), "-m", "styleprobe.cli", "--"])  # "--": ours, not its
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, *launcher, *cli], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_checkpoint(out / "checkpoint.pt", kind="gan")


def _differences(one: dict, two: dict) -> dict[str, float]:
    return {f"{net}.{key}": (value.float() - two[net][key].float()).abs().max().item()
            for net in ("G", "D", "G_ema") for key, value in one[net].items()
            if value.is_floating_point() and "noise_const" not in key}


def _largest(diff: dict[str, float]) -> list[tuple[str, float]]:
    return sorted(diff.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.parametrize("iterations, tolerance", [(1, 1e-5), (3, 2e-2)])
def test_two_processes_train_as_one_on_the_same_global_batch(
        tmp_path: Path, iterations: int, tolerance: float) -> None:
    one = _train(tmp_path / "one", iterations, 1)
    two = _train(tmp_path / "two", iterations, 2)
    assert one["step"] == two["step"] == iterations
    assert one["ada"]["p"] == pytest.approx(two["ada"]["p"])
    diff = _differences(one, two)
    exact = {k: v for k, v in diff.items() if "noise_strength" not in k and "w_avg" not in k}
    if iterations == 1:
        assert max(exact.values()) < tolerance, _largest(exact)
    else:
        assert max(diff.values()) < tolerance, _largest(diff)
    for i, (a, b) in enumerate(zip(one["history"], two["history"], strict=True)):
        close = 1e-4 if i == 0 else 1e-2  # the first step's losses see no noise yet
        assert a["loss_d"] == pytest.approx(b["loss_d"], abs=close)
        assert a["loss_g"] == pytest.approx(b["loss_g"], abs=close)
