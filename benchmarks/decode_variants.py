"""Other formulations of the compiled batch-1 decode step, patched into genesis_model for one process: what
`decode_profile.py` compares on a slice of a preset, and what test_decode.py's `genesis-compiled-torch` times on
the whole model against HF. The product (genesis_model and genesis_kernels as they are) is the variant "product":
on CUDA its one-row projections and one-query cache attention run genesis_kernels' Triton decoding kernels
(`matvec`, `decode_attention`) unless `AUTO_PREFERENCE` sends that GPU family to the torch path.

- "both: torch", "matvec: torch", "attention: torch": auto's preference switched to the torch path for both
  decoding ops or one of them (cuBLAS's matrix-vector kernels; SDPA over the whole cache under its mask), on
  this device's family;
- "matvec: reductions": one-row projections written as (x * W).sum(-1) with fp32 accumulation, for Inductor to
  generate instead of either kernel, and to fuse the pointwise work before them (SwiGLU, the norm's scaling) into
  their loads: fewer kernels a layer, which is what the H200 profile says a token is short of;
- "matvec: reductions (tuned)": the same with Inductor's coordinate-descent tuning of its kernels' launch configs;
- "attention: reductions", "both: reductions": the cache's attention written as products, a softmax and sums, for
  Inductor to fuse with the rotary embedding and the cache write before it (alone, and with the projections as
  reductions too).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from genesis_kernels import dispatch, fallback
from genesis_model import model as model_module

from benchmarks.workloads import DEVICE

product_linear = model_module.linear
product_decode_attention = model_module.decode_attention


def linear_with_reductions(x, weight):
    if x.numel() == x.shape[-1]:  # one row: batch-1 decoding
        return (x.float().unsqueeze(-2) * weight.float()).sum(-1).to(x.dtype)
    return F.linear(x, weight)


def decode_attention_with_reductions(q, keys, values, mask, filled, softmax_scale=None):
    keys, values = fallback.repeat_kv_heads(q, keys, values)
    scores = (q.float().unsqueeze(3) * keys.float().unsqueeze(2)).sum(-1) * q.shape[-1] ** -0.5  # (B, H, T, S)
    probs = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
    return (probs.unsqueeze(-1) * values.float().unsqueeze(2)).sum(-2).to(q.dtype)  # (B, H, T, D)


# The decoding ops' Triton kernels run compiled on CUDA only: on a CPU "torch" is what the product does already.
CUDA_ONLY_VARIANTS = ("both: torch", "matvec: torch", "attention: torch")
VARIANTS = {  # in the order they run: the ones not yet measured on a GPU first, so a run cut short still has them
    "product": {},
    "matvec: reductions": {"linear": linear_with_reductions},
    "matvec: reductions (tuned)": {"linear": linear_with_reductions, "inductor": {"coordinate_descent_tuning": True}},
    "attention: reductions": {"attention": decode_attention_with_reductions},
    "both: reductions": {"linear": linear_with_reductions, "attention": decode_attention_with_reductions},
    "both: torch": {"torch_ops": ("matvec", "decode_attention")},
    "matvec: torch": {"torch_ops": ("matvec",)},
    "attention: torch": {"torch_ops": ("decode_attention",)},
}


@contextlib.contextmanager
def patched(linear=product_linear, attention=product_decode_attention, torch_ops: tuple[str, ...] = (),
            inductor: dict | None = None):
    """The model's `linear` and cache attention replaced, auto's preference for `torch_ops` on this device's family
    set to torch, and Inductor's config patched with `inductor`."""
    import torch._inductor.config as inductor_config

    family = dispatch.gpu_family(DEVICE)
    saved = dict(dispatch.AUTO_PREFERENCE)
    dispatch.AUTO_PREFERENCE.update({(op, family): "torch" for op in torch_ops})
    model_module.linear, model_module.decode_attention = linear, attention
    torch._dynamo.reset()  # a fresh compile for each variant
    try:
        with inductor_config.patch(inductor or {}):
            yield
    finally:
        model_module.linear, model_module.decode_attention = product_linear, product_decode_attention
        dispatch.AUTO_PREFERENCE.clear()
        dispatch.AUTO_PREFERENCE.update(saved)
