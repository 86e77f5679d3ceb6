"""Multi-process training: torchrun's environment, process groups, and how a global batch
is split so that N processes compute what one process computes on the whole batch.

Started by ``torchrun --nproc_per_node K -m styleprobe.cli train gan ...``: each process
reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``, joins the group (NCCL on CUDA, gloo on
the CPU) and trains on its shard of every global batch; DistributedDataParallel averages
the gradients, so the update equals one process's on the global batch. Only rank 0
writes checkpoints, sample grids and the run record.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

STDDEV_GROUP = 4  # the discriminator's minibatch-stddev group (models.stylegan2)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Whether this process writes checkpoints and records."""
        return self.rank == 0


def world_from_env() -> World:
    """The world torchrun describes in the environment (one process without it)."""
    return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                 int(os.environ.get("LOCAL_RANK", 0)))


def join(world: World, device: str) -> str:
    """Join the process group (if ``world`` is distributed); the device this process
    trains on (``cuda:<local rank>`` for CUDA)."""
    if not world.distributed:
        return device
    if device.startswith("cuda"):
        torch.cuda.set_device(world.local_rank)
        device = f"cuda:{world.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo",
                                rank=world.rank, world_size=world.size)
    return device


def check_batch(batch: int, world: World) -> None:
    """A global batch must split into equal shards of whole minibatch-stddev groups."""
    if batch % (STDDEV_GROUP * world.size):
        raise ValueError(f"batch {batch} must be a multiple of {STDDEV_GROUP} x "
                         f"{world.size} processes")


def shard_rows(batch: int, world: World) -> torch.Tensor:
    """The rows of a global batch that ``world.rank`` computes.

    The discriminator's minibatch-stddev groups row ``i`` with rows ``i + batch/4``,
    ``i + 2·batch/4``, ``i + 3·batch/4``: each process takes a slice of every quarter, so
    its own groups are the same groups the single process forms.
    """
    if not world.distributed:
        return torch.arange(batch)
    rows = torch.arange(batch).reshape(STDDEV_GROUP, world.size, -1)
    return rows[:, world.rank].reshape(-1)


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over all processes (unchanged in a single process)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is true in any process: a stop decided together."""
    return all_sum([float(flag)], device)[0] > 0
