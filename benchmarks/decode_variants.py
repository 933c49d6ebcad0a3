"""Other formulations of the compiled batch-1 decode step, patched into genesis_model for one process: what
`decode_profile.py` compares on a slice of a preset, and what test_decode.py's `genesis-compiled-torch` times on
the whole model against HF. The product (genesis_model and genesis_kernels as they are) is the variant "product":
on CUDA its one-row projections and one-query cache attention run genesis_kernels' Triton decoding kernels
(`matvec`, `decode_attention`) unless `AUTO_PREFERENCE` sends that GPU family to the torch path.

- "both: torch", "matvec: torch", "attention: torch": auto's preference switched to the torch path for both
  decoding ops or one of them (cuBLAS's matrix-vector kernels; SDPA over the whole cache under its mask), on
  this device's family;
- "matvec: reductions": one-row projections written as (x * W).sum(-1) with fp32 accumulation, for Inductor to
  generate instead of either kernel.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from genesis_kernels import dispatch
from genesis_model import model as model_module

from benchmarks.workloads import DEVICE

product_linear = model_module.linear


def linear_with_reductions(x, weight):
    if x.numel() == x.shape[-1]:  # one row: batch-1 decoding
        return (x.float().unsqueeze(-2) * weight.float()).sum(-1).to(x.dtype)
    return F.linear(x, weight)


# The decoding ops' Triton kernels run compiled on CUDA only: on a CPU "torch" is what the product does already.
CUDA_ONLY_VARIANTS = ("both: torch", "matvec: torch", "attention: torch")
VARIANTS = {  # in the order they run: the likeliest gains first, so a run cut short still has them
    "product": {},
    "both: torch": {"torch_ops": ("matvec", "decode_attention")},
    "matvec: torch": {"torch_ops": ("matvec",)},
    "attention: torch": {"torch_ops": ("decode_attention",)},
    "matvec: reductions": {"linear": linear_with_reductions},
}


@contextlib.contextmanager
def patched(linear=product_linear, torch_ops: tuple[str, ...] = ()):
    """The model's `linear` replaced, and auto's preference for `torch_ops` on this device's family set to torch."""
    family = dispatch.gpu_family(DEVICE)
    saved = dict(dispatch.AUTO_PREFERENCE)
    dispatch.AUTO_PREFERENCE.update({(op, family): "torch" for op in torch_ops})
    model_module.linear = linear
    torch._dynamo.reset()  # a fresh compile for each variant
    try:
        yield
    finally:
        model_module.linear = product_linear
        dispatch.AUTO_PREFERENCE.clear()
        dispatch.AUTO_PREFERENCE.update(saved)
