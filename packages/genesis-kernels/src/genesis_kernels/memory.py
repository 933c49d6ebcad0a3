"""Peak extra memory of a piece of code: the CUDA allocator's peak on CUDA, a count of live tensor storages on
the CPU (where PyTorch keeps no allocator statistics). Used by ``genesis-kernels bench`` and the memory tests.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


@dataclass
class PeakMemory:
    """Bytes above what was allocated when the measurement started; filled in when it ends."""
    bytes: int = 0


class LiveStorageBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created by dispatched ops (forward and backward) while any tensor
    that uses them is alive, and keeps the peak. Storages of ``preexisting`` tensors (the inputs, which views
    and in-place ops hand back) are not counted, so the peak is the extra memory of what ran inside."""

    def __init__(self, preexisting: tuple[torch.Tensor, ...] = ()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._ignored = {t.untyped_storage().data_ptr() for t in preexisting}
        self._users: dict[int, int] = {}  # storage data_ptr -> live tensors seen using it

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0 or key in self._ignored:
            return
        if key not in self._users:
            self._users[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._users[key] += 1
        weakref.finalize(tensor, self._release, key, nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        self._users[key] -= 1
        if self._users[key] == 0:
            del self._users[key]
            self.live -= nbytes


@contextmanager
def peak_memory(device: torch.device | str, inputs: tuple[torch.Tensor, ...] = ()) -> Iterator[PeakMemory]:
    """Measure the peak extra memory of the ``with`` body on ``device``; ``inputs`` are tensors the body
    receives, whose storages (and views of them) are not counted as extra on the CPU."""
    device = torch.device(device)
    result = PeakMemory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        torch.cuda.synchronize(device)
        result.bytes = torch.cuda.max_memory_allocated(device) - start
        return
    counter = LiveStorageBytes(inputs)
    with counter:
        yield result
    result.bytes = counter.peak
