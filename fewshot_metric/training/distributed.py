"""Device choice and the process group of a `torchrun` launch.

`torchrun --nproc_per_node=N -m fewshot_metric.cli train RECIPE` starts N processes with
RANK, LOCAL_RANK and WORLD_SIZE in their environment; `init_distributed` joins them with gloo
on CPU or nccl on CUDA. A plain `fewshot-metric train` is a world of one and needs no group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


def pick_device(requested: str | None = None) -> torch.device:
    """"auto" or None: CUDA when available, else CPU; otherwise the named torch device."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} asked for, but this torch sees no CUDA GPU; use "
                         f"--device cpu (or auto)")
    return device


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run: rank of world_size, and the device it trains on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and plots."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int:
    value = os.environ.get(name)
    if value is None or not value.isdigit():
        raise ValueError(f"WORLD_SIZE > 1 but {name}={value!r}; launch with torchrun, which "
                         f"sets RANK, LOCAL_RANK and WORLD_SIZE")
    return int(value)


def init_distributed(device: str | None = None) -> DistributedContext:
    """Joins the torchrun process group when WORLD_SIZE > 1 (backend nccl for CUDA, gloo for
    CPU; each rank takes GPU LOCAL_RANK); a single process just picks its device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    chosen = pick_device(device)
    if world_size <= 1:
        return DistributedContext(0, 1, chosen)
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, chosen)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
