"""The C allocator's settings for a training process on Linux (glibc).

glibc serves blocks above its mmap threshold (dynamic, 32 MiB at most) with fresh pages from the OS and hands
them back when they are freed, and it trims the heap's free top as soon as it passes its trim threshold. A CPU
training step allocates and frees the same large tensors every step: the logits, their log-softmax and gradient
(67 MB each at tiny's 8 x 256 tokens and 8,192-word vocabulary), which the next step faults in again, page by page,
zeroed by the kernel: ~75k page faults a tiny step on the project's 2-core machine. With both thresholds raised,
freed blocks stay in the heap for the next step: 3k faults, the tiny step 0.47 -> 0.41 s, and `genesis-train --mode
tiny` 4,060-4,280 -> 4,680-4,830 tokens/s. The process then keeps its peak memory between steps instead of
returning it, which a training process reaches again at its next step anyway.
"""

from __future__ import annotations

import ctypes
import sys

# mallopt's parameter numbers (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20  # above every per-step tensor of the CPU presets; bigger blocks are still mmapped
TRIM_THRESHOLD = 1 << 30


def retain_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where the C library has no mallopt (not
    Linux, or not glibc). For a process's entry point: it changes how the whole process allocates."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Both or neither: either one set alone freezes the mmap threshold where it stands (a trim threshold alone left
    # it at 128 KiB here: every block above that mmapped, 4.6x the page faults and a 1.6x slower tiny step).
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
