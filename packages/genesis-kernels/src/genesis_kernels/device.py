"""Facts about the device a call runs on, shared by the dispatcher and the kernels' launch configs.

This module imports neither of them, so both can import it.
"""

from __future__ import annotations

import functools

import torch


def gpu_family(device: torch.device) -> str:
    """The launch-config family of ``device``: "sm_75", "sm_8x", "sm_90" (Hopper and newer), or
    "interpreter" for CPU tensors run by the Triton interpreter."""
    if device.type != "cuda":
        return "interpreter"
    major, _ = compute_capability(device)
    if major >= 9:
        return "sm_90"
    return "sm_8x" if major == 8 else "sm_75"


# The device checks are also asked while torch.compile traces (the decoding ops dispatch inside a compiled step):
# assume_constant_result has them run once at trace time, their answer a constant of the graph, rather than traced
# through their caches and imports.
@torch.compiler.assume_constant_result
def compute_capability(device: torch.device) -> tuple[int, int]:
    """(major, minor) compute capability of the CUDA ``device`` (its index, or the current device)."""
    return _capability_of_index(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _capability_of_index(index: int) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)
