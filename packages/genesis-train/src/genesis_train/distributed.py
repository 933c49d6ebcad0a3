"""Training in several processes under torchrun: the process group, DistributedDataParallel, and the few collectives
the loop needs.

`torchrun --nproc_per_node N -m genesis_train ...` starts N copies of genesis-train with RANK, LOCAL_RANK and
WORLD_SIZE in their environment; without them (a plain `genesis-train`) this is a world of one and every method
below is a no-op, so the trainer has one code path.

What each rank does (README "Several processes"):
- one device each: cuda:LOCAL_RANK with NCCL, or the CPU with gloo;
- the same data stream: every rank draws every micro-batch of the global stream and keeps every WORLD_SIZE-th
  (`Distributed.keep`), so a step of N ranks x A micro-batches reads exactly the micro-batches a single process
  reads with --grad-accum N x A, and the sampler's state is the same on every rank;
- gradients averaged by DDP: the step is that single process's step, to float reduction order;
- side effects once: rank 0 alone writes checkpoints, metrics, TensorBoard and events, evaluates and runs the
  measures (callbacks); the other ranks wait for it at their next collective.

With --fsdp the model is sharded (FSDP2, `Distributed.shard`) instead of wrapped in DDP: every rank holds a part of
each weight, gradient and optimizer moment, and a forward gathers a block's weights just before it runs. Every
forward is then a collective: all ranks evaluate and run the measures together (rank 0 still alone writes), and a
checkpoint is written by all of them (genesis_train.checkpointing).
"""

from __future__ import annotations

import datetime
import inspect
import os
import time
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# Rank 0 evaluates and writes checkpoints while the others wait in their next collective; a large preset's
# evaluation on a slow device may take many minutes, longer than NCCL's 10-minute default.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


class PeerFailed(Exception):
    """Another rank failed (it reports why); this one stops without a message of its own."""


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: its shard of a sharded one (a DTensor, under --fsdp), else the tensor."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a tensor that may be a DTensor (a collective for a sharded or partial one)."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


class Distributed:
    """This process's place in the run: rank, world size, local rank (the device index on its node)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, local_world_size: int = 1):
        self.rank, self.world_size = rank, world_size
        self.local_rank, self.local_world_size = local_rank, local_world_size

    @classmethod
    def from_environment(cls) -> Distributed:
        """torchrun's RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE, or a world of one."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")),
                   int(os.environ.get("LOCAL_WORLD_SIZE", "1")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes and reports."""
        return self.rank == 0

    def start(self, device: torch.device) -> torch.device:
        """Joins the process group (NCCL for CUDA, gloo for the CPU) and returns this rank's device."""
        if not self.enabled:
            return device
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT,
                                    device_id=device if device.type == "cuda" else None)
        return device

    def close(self) -> None:
        """Leaves the process group once every rank is done. gloo's process-group destructor can deadlock with a
        worker thread still freeing a finished collective's tensor (which needs the GIL the destructor holds), so
        the ranks meet at a barrier and then give those threads a moment before anything is torn down."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            time.sleep(0.1)
            dist.destroy_process_group()

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP over `model` (averaging gradients in backward), or `model` itself in a world of one. A micro-batch
        uses the heads of its task only, so a rank's step may leave heads without gradients:
        find_unused_parameters lets DDP average those as zeros, as the single process's sum over micro-batches
        does. RoPE's tables are the only buffers and are the same everywhere: no buffer broadcast a forward."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        # The option is forward_sync_buffers in newer torch, broadcast_buffers (deprecated there) before.
        options = inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers": False}
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=True, **no_buffer_sync)

    def shard(self, model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
        """FSDP2 over a MultiTaskModel, in place: one unit per decoder block, then the root (embeddings, final norm,
        heads). Below float32 the weights are gathered in `dtype` and gradients reduced in float32 (the mixed
        precision policy); the master weights and the optimizer state stay float32.

        A rank's micro-batches may leave some heads without a gradient while another rank's give them one; a unit's
        gradients are reduce-scattered as one collective, so every rank reduces zeros for those (as DDP's
        find_unused_parameters does). `pooled` (the measures' forward) gathers the root's weights as forward
        does."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

        policy = MixedPrecisionPolicy() if dtype == torch.float32 else \
            MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
        for block in model.lm.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        model.set_reduce_scatter_unused_params(True)
        register_fsdp_forward_method(model, "pooled")
        return model

    def keep(self, draw: Callable[[], T]) -> T:
        """This rank's share of a global stream: draws world_size items and keeps the rank-th."""
        items = [draw() for _ in range(self.world_size)]
        return items[self.rank]

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over ranks (in place)."""
        if self.enabled:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (every rank gets the same answer)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=self._collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def main_only(self, work: Callable[[], T]) -> T | None:
        """`work` on rank 0 while the others wait; its result on rank 0, None elsewhere. When rank 0 fails, it
        raises its error and the others raise PeerFailed."""
        if not self.enabled:
            return work()
        if self.main:
            try:
                result = work()
            except BaseException:
                self.any(True)
                raise
            self.any(False)
            return result
        if self.any(False):
            raise PeerFailed("rank 0 failed")
        return None

    def main_first(self, work: Callable[[], T]) -> T:
        """`work` on rank 0, then on the others (rank 0 fills caches the others then read)."""
        result = self.main_only(work)
        return result if self.main else work()

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" \
            else torch.device("cpu")
