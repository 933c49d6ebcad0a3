"""Other formulations of the batch-1 decode step, chosen through genesis_kernels' `dispatch.prefer`: what
`decode_profile.py` compares on a slice of a preset (compiled, or eager with `--eager`), and what
benchmarks/test_decode.py's `genesis-torch` and `genesis-compiled-torch` time on the whole model against HF. The
product (genesis_model and genesis_kernels as they are) is the variant "product": on CUDA its one-row projections
(the down projection with SwiGLU fused into its loads, the gate/up projection with the attention's residual norm)
and its attention step (RoPE, the cache write and attention in one launch) run genesis_kernels' Triton decoding
kernels (`matvec`, `residual_norm_matvec`, `decode_attention`) unless `AUTO_PREFERENCE` sends that GPU family to
the torch path.

- "both: torch", "matvec: torch", "attention: torch": auto's choice switched to the torch path for both
  decoding ops or one of them (cuBLAS's matrix-vector kernels; RoPE, index_copy and SDPA over the whole cache
  under its mask, fused where Inductor can).
"""

from __future__ import annotations

import contextlib

import torch
from genesis_kernels import dispatch

# The decoding ops' Triton kernels run on CUDA only: on a CPU "torch" is what the product does already.
CUDA_ONLY_VARIANTS = ("both: torch", "matvec: torch", "attention: torch")
VARIANTS = {  # in the order they run
    "product": {},
    "both: torch": {"torch_ops": ("matvec", "residual_norm_matvec", "decode_attention")},
    "matvec: torch": {"torch_ops": ("matvec", "residual_norm_matvec")},
    "attention: torch": {"torch_ops": ("decode_attention",)},
}


@contextlib.contextmanager
def patched(torch_ops: tuple[str, ...] = ()):
    """auto's choice for `torch_ops` set to torch (`dispatch.prefer`), for a fresh compile."""
    with dispatch.prefer({op: "torch" for op in torch_ops}):
        torch._dynamo.reset()  # a fresh compile for each variant
        yield
