"""Several processes, one search: what ``torchrun`` gives us and the few collectives we need.

``torchrun --nproc_per_node=N search.py ...`` starts N copies of the program with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment. The entry point
calls :func:`init_from_environment`, which joins the process group (NCCL on CUDA,
gloo on CPU: the backend follows the device) and returns a :class:`World`; the
library takes that ``World`` as an explicit value. Without torchrun it is
:data:`SINGLE`, and every method below is a no-op, so a single-process run does
exactly what it did before.

One-path search needs more than wrapping the model (see ``Searcher``):

- every rank runs the same sampled path: all ranks seed the global generator alike
  and draw the Gumbel noise in the same order, so no noise crosses the wire;
- weight gradients are averaged by DistributedDataParallel, told to expect unused
  parameters; an op no rank ran keeps ``grad = None``, so SGD's momentum and weight
  decay skip it exactly as in one process;
- the architecture logits stay outside DDP, and their gradients are averaged by one
  all-reduce per architecture step, which touches no weight gradient;
- batch-norm running statistics are averaged at the end of every epoch, so every
  rank holds the same buffers at each checkpoint (within an epoch, each rank
  normalises with its own batch statistics, as a single GPU would with its share).
"""

from __future__ import annotations

import datetime
import gc
import inspect
import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

import torch
import torch.distributed as dist
from torch import nn

from .errors import AllRanksError, UserError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes the run directory and prints."""
        return self.rank == 0

    # ---- collectives (no-ops in one process) --------------------------------------------
    def all_reduce_sum_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Sum ``tensors`` over the ranks, in place (one flat all-reduce per dtype)."""
        tensors = list(tensors)
        if not self.distributed or not tensors:
            return
        for dtype in dict.fromkeys(t.dtype for t in tensors):
            group = [t for t in tensors if t.dtype == dtype]
            flat = torch.cat([t.reshape(-1) for t in group])
            dist.all_reduce(flat)
            offset = 0
            for t in group:
                t.copy_(flat[offset : offset + t.numel()].view_as(t))
                offset += t.numel()

    def all_reduce_mean_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average ``tensors`` over the ranks, in place. Every rank gets the same bits."""
        tensors = list(tensors)
        if not self.distributed or not tensors:
            return
        self.all_reduce_sum_(tensors)
        for t in tensors:
            t.div_(self.world_size)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box: List[Any] = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank (benchmarks time steps between barriers)."""
        if self.distributed:
            dist.barrier()

    def gather_objects(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        values: List[Any] = [None] * self.world_size
        dist.all_gather_object(values, obj)
        return values

    def raise_agreed(self, error: Optional[UserError]) -> None:
        """Stop every rank alike when any rank met ``error`` (a collective: every rank calls it at
        the same point). Rank 0 raises its own error, or the first rank's message; the other ranks
        raise :class:`AllRanksError`, which the command line leaves to rank 0 to print."""
        messages = self.gather_objects(None if error is None else str(error))
        first = next((m for m in messages if m is not None), None)
        if first is None:
            return
        if not self.is_main:
            raise AllRanksError(first)
        raise error if error is not None else UserError(first)  # its own type: a WriteError says so

    # ---- models -----------------------------------------------------------------------
    def wrap(self, module: nn.Module, device: torch.device, *, find_unused_parameters: bool) -> nn.Module:
        """``module`` in DistributedDataParallel (``module`` itself in one process).

        Buffers are not broadcast at every forward (see :meth:`average_buffers_`; they start equal
        because every rank builds the model from the same seed). ``gradient_as_bucket_view`` keeps
        one buffer per gradient; the optimiser's ``zero_grad(set_to_none=True)`` stays, so an op no
        rank ran keeps ``grad = None``.
        """
        if not self.distributed:
            return module
        ids = [device.index] if device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        # Newer torch renamed broadcast_buffers (forward_sync_buffers=False still syncs at init).
        no_forward_sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
            else {"broadcast_buffers": False}
        )
        return ddp(
            module,
            device_ids=ids,
            find_unused_parameters=find_unused_parameters,
            gradient_as_bucket_view=True,
            **no_forward_sync,
        )

    def average_buffers_(self, module: nn.Module) -> None:
        """Average the floating-point buffers (batch-norm running statistics) over the ranks."""
        self.all_reduce_mean_([b for b in module.buffers() if b.is_floating_point()])


SINGLE = World()


def environment_world() -> World:
    """The :class:`World` that torchrun's environment describes (:data:`SINGLE` without torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(rank=int(os.environ["RANK"]), world_size=size, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init_from_environment(device: torch.device, timeout_s: float) -> World:
    """Join torchrun's process group on ``device``'s backend (NCCL for CUDA, gloo for CPU).

    ``timeout_s`` bounds every collective, so the survivors of a rank that died stop
    with an error instead of waiting forever (torchrun also stops them).
    """
    world = environment_world()
    if not world.distributed or dist.is_initialized():
        return world
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {}
    if device.type == "cuda" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        kwargs["device_id"] = local_device(device, world)  # binds NCCL to this rank's GPU at once
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    return world


def local_device(device: torch.device, world: World) -> torch.device:
    """Each process's own GPU under torchrun (``cuda:LOCAL_RANK``, whatever index ``run.device``
    names); the CPU is shared."""
    if device.type == "cuda" and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(
                f"process {world.local_rank} of this node has no GPU of its own ({torch.cuda.device_count()} "
                "visible); start at most one process per GPU (torchrun --nproc_per_node)"
            )
        return torch.device("cuda", world.local_rank)
    return device


def shutdown(world: Optional[World], *, completed: bool = False) -> None:
    """Leave the process group (when one was joined).

    ``completed``: every rank finished the command, so each waits for the others before
    leaving. Without that wait a rank that ends first tears down its gloo connections while
    a peer is still using its own, and the peer can abort at exit ("terminate called without
    an active exception"). After an error no rank waits: the others may never arrive.
    """
    if world is None or not world.distributed or not dist.is_initialized():
        return
    if completed:
        dist.barrier()
    gc.collect()  # drop the last DistributedDataParallel reducers while the interpreter is whole
    dist.destroy_process_group()
