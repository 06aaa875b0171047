"""One training run across several processes (torchrun): which process this is, and the few
collectives the toolkit needs.

    torchrun --standalone --nproc_per_node 2 -m toolkit run SPEC.toml

torchrun starts the processes and tells each its place through the environment (RANK,
WORLD_SIZE, LOCAL_RANK). `setup()` reads it and joins the default process group (gloo on CPU;
gloo for CPU tensors and NCCL for CUDA tensors on GPUs); `current()` then says which process
this is. Every helper is a no-op in a single process, so callers need no branch of their own.
Also how one run is split across them: each process's share of a batch (`share`), the model
wrapped in DistributedDataParallel (`data_parallel`), each process's GPU (`device_for`) and
the checks a run must pass to be split (`check_world`). Not here: who writes files (loop.py,
toolkit.sweep.runner).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from toolkit.errors import SpecError, ToolkitError, one_line


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
    world = planned()
    if not world.active:
        return current()

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
    """This process's World: size 1 unless setup() (or the caller) joined a process group."""
    if not dist.is_available() or not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), _int_env("LOCAL_RANK", 0))


def barrier() -> None:
    """Wait until every process gets here."""
    if current().active:
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (any picklable value), on every rank."""
    if not current().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank. Also a barrier."""
    world = current()
    if not world.active:
        return [obj]
    gathered: list[Any] = [None] * world.size
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce_sum(values: list[float]) -> list[float]:
    """The element-wise sum of `values` over all ranks (float64, on the CPU)."""
    if not current().active:
        return list(values)
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.tolist()


@contextlib.contextmanager
def peers_watched() -> Iterator[None]:
    """Turn a collective that fails because another process stopped (its own error, printed
    by that process, is the one that matters) into one line instead of a gloo traceback."""
    try:
        yield
    except RuntimeError as exc:
        world = current()
        if not world.active or not _peer_lost(exc):
            raise
        raise ToolkitError(
            f"process {world.rank} of {world.size}: another process of this torchrun job "
            f"stopped ({one_line(exc, 160)}); its own error, above, says why"
        ) from None


def _peer_lost(exc: RuntimeError) -> bool:
    """torch.distributed's own errors (NCCL's among them), and gloo's transport errors, which
    arrive as plain RuntimeErrors naming gloo's sources."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return any(sign in str(exc) for sign in ("/gloo/", "Connection closed by peer"))


def shutdown() -> None:
    """Leave the process group, once every process is done (NCCL warns at exit otherwise)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def planned() -> World:
    """The World torchrun's environment describes, before (or without) joining it: checks that
    depend only on the number of processes run here, so that every process fails alike before
    any of them waits on another."""
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


# -- one run split across the processes --------------------------------------------------------
def mixed_seed(*words: int) -> int:
    """A seed mixed from several integers (the run's seed, a rank, ...); any ints work."""
    return int(np.random.SeedSequence([w % 2**64 for w in words]).generate_state(1)[0])


def share(batch: Any, world: World) -> Any:
    """This process's contiguous share of a batch's rows: all of them in a single process."""
    return batch.tensor_split(world.size)[world.rank] if world.active else batch


def device_for(device: str, world: World) -> str:
    """The device a process trains on: each process of a multi-process run on its own GPU (the
    one torchrun's LOCAL_RANK names), whatever index the spec gives."""
    if world.active and device.startswith("cuda"):
        return f"cuda:{world.local_rank}"
    return device


def check_world(run: Any, world: World, device: str) -> None:
    """A run can be split across the processes of `world`: its global batch divides evenly
    among them, and its device is one each process can have its own of (not mps)."""
    if not world.active:
        return
    if run.train.batch_size % world.size:
        raise SpecError(
            f"variant {run.variant!r}: train.batch_size ({run.train.batch_size}) is the global "
            f"batch and must divide evenly among the {world.size} processes; use a multiple of "
            f"{world.size}"
        )
    if device.startswith("mps"):
        raise SpecError(
            "train.device mps cannot be shared by several processes; use cpu or cuda with torchrun"
        )


def data_parallel(model: Any, world: World, device: str) -> Any:
    """The model in DistributedDataParallel, which averages gradients across processes during
    backward; the model itself in a single process."""
    if not world.active:
        return model
    # Buffers (attention masks, rotary tables) are the same everywhere and training changes
    # none, so they are not re-sent at every forward; torch 2.13 renamed that switch.
    options = inspect.signature(DistributedDataParallel).parameters
    no_resend = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    device_ids = [int(device.split(":")[1])] if device.startswith("cuda:") else None
    return DistributedDataParallel(model, device_ids=device_ids, **{no_resend: False})
