"""Other formulations of the compiled batch-1 decode step, patched into genesis_model for one process: what
`decode_profile.py` compares on a slice of a preset, and what test_decode.py's `genesis-compiled-kernels` times
on the whole model against HF. The product (genesis_model as it is) is the variant "product".

- "attention: sdpa efficient": the cache's SDPA call restricted to the memory-efficient backend (an H200 ran
  cuDNN's flash kernel there: 7 us a layer at 256 cache slots, a fifth of the token's kernel time);
- "attention: reductions": q.k, mask, softmax and p.v written as elementwise products and sums, which Inductor
  generates as its own fused kernels;
- "matvec: reductions": one-row projections written as (x * W).sum(-1) with fp32 accumulation, for Inductor to
  generate instead of cuBLAS's matrix-vector kernels (an H200 ran those at ~20% of its bandwidth);
- "both: reductions": the last two together;
- "attention: triton kernel", "matvec: triton kernel", "both: triton kernels": genesis_kernels' decoding kernels
  (kernels/decode_attention.py: one program per row and head over the filled slots only; kernels/matvec.py: a
  few weight rows per program in one tile), not yet used by the model, inside the same compiled step.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from genesis_kernels.kernels.decode_attention import decode_attention_triton
from genesis_kernels.kernels.matvec import matvec_triton
from genesis_model import KVCache
from genesis_model import model as model_module
from torch.nn.attention import SDPBackend, sdpa_kernel

product_attend = KVCache.attend
product_linear = model_module.linear


def attend_sdpa_efficient(self, layer, q, k, v):
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):
        return product_attend(self, layer, q, k, v)


def store(cache, layer, k, v):
    """Write this step's keys/values into the cache as KVCache.attend does; the layer's whole cache tensors."""
    keys, values = cache.keys[layer], cache.values[layer]
    keys.index_copy_(2, cache._write_slots, k.to(keys.dtype))
    values.index_copy_(2, cache._write_slots, v.to(values.dtype))
    return keys, values


def attend_with_reductions(self, layer, q, k, v):
    keys, values = store(self, layer, k, v)
    if self.groups > 1:
        keys, values = keys.repeat_interleave(self.groups, 1), values.repeat_interleave(self.groups, 1)
    scores = (q.float().unsqueeze(3) * keys.float().unsqueeze(2)).sum(-1) * q.shape[-1] ** -0.5  # (B, H, T, S)
    probs = scores.masked_fill(~self._mask, float("-inf")).softmax(-1)
    return (probs.unsqueeze(-1) * values.float().unsqueeze(2)).sum(-2).to(q.dtype)  # (B, H, T, D)


def attend_with_triton_kernel(self, layer, q, k, v):
    if q.shape[2] != 1:  # the prompt: several queries a row
        return product_attend(self, layer, q, k, v)
    keys, values = store(self, layer, k, v)
    mask = self._mask.reshape(q.shape[0], keys.shape[2])  # (B, 1, 1, S) -> (B, S)
    return decode_attention_triton(q.contiguous(), keys, values, mask, self.length + 1)


def linear_with_triton_kernel(x, weight):
    if x.numel() == x.shape[-1]:
        return matvec_triton(x, weight)
    return F.linear(x, weight)


def linear_with_reductions(x, weight):
    if x.numel() == x.shape[-1]:  # one row: batch-1 decoding
        return (x.float().unsqueeze(-2) * weight.float()).sum(-1).to(x.dtype)
    return F.linear(x, weight)


# SDPA has no memory-efficient backend on the CPU; the Triton kernels run on CPU tensors only when interpreted.
CUDA_ONLY_VARIANTS = ("attention: sdpa efficient", "both: triton kernels", "attention: triton kernel",
                      "matvec: triton kernel")
VARIANTS = {  # in the order they run: the likeliest gains first, so a run cut short still has them
    "product": {},
    "both: triton kernels": {"attend": attend_with_triton_kernel, "linear": linear_with_triton_kernel},
    "attention: triton kernel": {"attend": attend_with_triton_kernel},
    "matvec: triton kernel": {"linear": linear_with_triton_kernel},
    "matvec: reductions": {"linear": linear_with_reductions},
    "attention: reductions": {"attend": attend_with_reductions},
    "both: reductions": {"attend": attend_with_reductions, "linear": linear_with_reductions},
    "attention: sdpa efficient": {"attend": attend_sdpa_efficient},
}


@contextlib.contextmanager
def patched(attend=product_attend, linear=product_linear):
    KVCache.attend, model_module.linear = attend, linear
    torch._dynamo.reset()  # a fresh compile for each variant
    try:
        yield
    finally:
        KVCache.attend, model_module.linear = product_attend, product_linear
