"""This process's place in a torchrun world: which shard it runs, which GPU it takes, and the
two collectives a sweep needs (a barrier at the start, a sum of counts at the end). The items
themselves need no communication, so processes never wait on each other while they work."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch

# Ranks finish their shards at different times and wait for each other at the end; a
# collective's default timeout (10-30 min) would abort long sweeps, so wait this long.
BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass
class Distributed:
    """This process's place in a torchrun world (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo or nccl once a process group is up

    def device(self, asked: str) -> str:
        """cuda under torchrun means this rank's GPU, cuda:LOCAL_RANK."""
        if self.world > 1 and torch.device(asked).type == "cuda":
            return f"cuda:{self.local_rank}"
        return asked

    def barrier(self) -> None:
        if self.backend is None:
            return
        import torch.distributed as dist

        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def sum(self, values: list[int]) -> list[int]:
        if self.backend is None:
            return values
        import torch.distributed as dist

        device = f"cuda:{self.local_rank}" if self.backend == "nccl" else "cpu"
        t = torch.tensor(values, dtype=torch.int64, device=device)
        dist.all_reduce(t)
        return [int(v) for v in t.tolist()]


@contextmanager
def distributed(device: str) -> Iterator[Distributed]:
    """Join the torchrun world if there is one (gloo on CPU, nccl on CUDA); always leave it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = Distributed(
        rank=int(os.environ.get("RANK", "0")), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )
    if world == 1:
        yield d
        return
    import torch.distributed as dist

    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError(
                f'model.device {device!r} was asked for, but this torch build sees no CUDA GPU. Use device = "cpu".'
            )
        if d.local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {d.local_rank} but only {torch.cuda.device_count()} GPUs are visible; "
                "use at most one process per GPU (torchrun --nproc-per-node)."
            )
        torch.cuda.set_device(d.local_rank)
    d.backend = "nccl" if cuda else "gloo"
    dist.init_process_group(d.backend, timeout=BARRIER_TIMEOUT)
    try:
        yield d
    finally:
        dist.destroy_process_group()
