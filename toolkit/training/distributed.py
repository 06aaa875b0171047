"""One training run across several processes (torchrun): which process this is, and the few
collectives the toolkit needs.

    torchrun --standalone --nproc_per_node 2 -m toolkit run SPEC.toml

torchrun starts the processes and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK). `setup()` reads it and joins the default process group (gloo on CPU;
gloo for CPU tensors and NCCL for CUDA tensors on GPUs); `current()` then says which process
this is. Every helper is a no-op in a single process, so callers need no branch of their own.
Not here: what is split across processes and who writes files (train.py, runner.py).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class World:
    """This process's place among the processes training one run together."""

    rank: int = 0  # 0 .. size - 1, unique across all nodes
    size: int = 1  # number of processes
    local_rank: int = 0  # index on this node: the GPU this process uses

    @property
    def main(self) -> bool:
        """The process that writes files, prints and calls observer hooks."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """More than one process: collectives are needed."""
        return self.size > 1


def setup() -> World:
    """Join the process group torchrun describes in the environment (once; later calls return
    the same World). A single process (no WORLD_SIZE, or 1) joins nothing."""
    world = _from_environment()
    if not world.active:
        return current()
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise ToolkitError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    cuda = torch.cuda.is_available()
    if cuda:
        if world.local_rank >= torch.cuda.device_count():
            raise ToolkitError(
                f"LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} CUDA "
                f"device(s) are visible; start at most that many processes per node"
            )
        torch.cuda.set_device(world.local_rank)  # before NCCL starts, so it uses this GPU
    if not dist.is_initialized():
        # CPU tensors (object collectives, metric sums) go through gloo, CUDA tensors (DDP's
        # gradients) through NCCL.
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo")
    return current()


def current() -> World:
    """This process's World: size 1 unless setup() (or the caller) joined a process group.
    Imports nothing: torch is only consulted when something already imported it."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), _int_env("LOCAL_RANK", 0))


def barrier() -> None:
    """Wait until every process gets here."""
    if current().active:
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (any picklable value), on every rank."""
    if not current().active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank. Also a barrier."""
    world = current()
    if not world.active:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: list[float]) -> list[float]:
    """The element-wise sum of `values` over all ranks (float64, on the CPU)."""
    if not current().active:
        return list(values)
    import torch
    import torch.distributed as dist

    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


def shutdown() -> None:
    """Leave the process group, once every process is done (NCCL warns at exit otherwise)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _from_environment() -> World:
    size = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", 0)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ToolkitError(
            f"bad torchrun environment: RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}; "
            f"expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0 (start with torchrun)"
        )
    return World(rank, size, local_rank)


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ToolkitError(
            f"environment variable {name}={value!r} is not an integer; it is set by torchrun "
            f"(unset it to train in a single process)"
        ) from None
