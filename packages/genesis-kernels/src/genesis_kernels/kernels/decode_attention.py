"""Attention of one new query per row over a static KV cache, in Triton: the attention of batch-1 decoding.

Why: on an H200, SDPA sent deep_narrow_40's decoding attention (one query, 256 cache slots under a boolean mask)
to cuDNN's flash kernel at 7 us a layer plus a mask-preparing kernel, a quarter of a compiled token's kernel time.
Here one program per (row, head) reads only the slots filled so far (a count on the device, so one compiled
step or CUDA graph serves every position), skips masked slots (left padding), and keeps an online softmax in
fp32, FlashAttention style. Grouped-query attention reads each key/value head once per query head of its group.

Inference only (no backward). Registered as the op ``genesis_kernels::decode_attention`` through
``torch.library.triton_op`` so that ``torch.compile`` keeps it in its graph. The model's KV cache reaches it
through ``genesis_kernels.decode_attention`` (dispatch.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

BLOCK_SLOTS = 64
NUM_WARPS = 4


@triton.jit
def decode_attention_kernel(Q, K, V, MASK, FILLED, OUT, stride_qb, stride_qh, stride_kb, stride_kh, stride_ks,
                            stride_vb, stride_vh, stride_vs, stride_mb, stride_ob, stride_oh, head_dim, n_slots, scale,
                            GROUPS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_SLOTS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    kv_head = head // GROUPS
    dims = tl.arange(0, BLOCK_D)
    dim_mask = dims < head_dim
    q = tl.load(Q + row * stride_qb + head * stride_qh + dims, mask=dim_mask, other=0.0).to(tl.float32)
    # Cast after scaling: Inductor passes a Python float argument as fp64, which would make every score fp64.
    q = (q * scale).to(tl.float32)
    filled = tl.minimum(tl.load(FILLED), n_slots)
    k_base = K + row * stride_kb + kv_head * stride_kh
    v_base = V + row * stride_vb + kv_head * stride_vh
    m = tl.full((), float("-inf"), tl.float32)  # running max of the scores
    total = tl.zeros((), dtype=tl.float32)  # running sum of exp(score - m)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for start in range(0, filled, BLOCK_SLOTS):
        slots = start + tl.arange(0, BLOCK_SLOTS)
        in_cache = slots < filled
        visible = tl.load(MASK + row * stride_mb + slots, mask=in_cache, other=0) != 0
        tile_mask = in_cache[:, None] & dim_mask[None, :]
        # Keys and values issued together: both loads in flight before the first use.
        k = tl.load(k_base + slots[:, None] * stride_ks + dims[None, :], mask=tile_mask, other=0.0)
        v = tl.load(v_base + slots[:, None] * stride_vs + dims[None, :], mask=tile_mask, other=0.0)
        scores = tl.where(visible, tl.sum(k.to(tl.float32) * q[None, :], axis=1), float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        # While every slot so far is masked m_new is -inf: shift by 0 instead, so exp gives 0, not NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - shift)
        rescale = tl.exp(m - shift)
        acc = acc * rescale + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
        total = total * rescale + tl.sum(p, axis=0)
        m = m_new
    out = acc / total
    tl.store(OUT + row * stride_ob + head * stride_oh + dims, out.to(OUT.dtype.element_ty), mask=dim_mask)


@triton_op("genesis_kernels::decode_attention", mutates_args=())
def _decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                      filled: torch.Tensor, scale: float) -> torch.Tensor:
    batch, heads, _, head_dim = q.shape
    out = torch.empty_like(q)
    grid = (batch, heads)
    wrap_triton(decode_attention_kernel)[grid](
        q, keys, values, mask, filled, out, q.stride(0), q.stride(1), keys.stride(0), keys.stride(1),
        keys.stride(2), values.stride(0), values.stride(1), values.stride(2), mask.stride(0), out.stride(0),
        out.stride(1), head_dim, keys.shape[2], scale, GROUPS=heads // keys.shape[1],
        BLOCK_D=triton.next_power_of_2(head_dim), BLOCK_SLOTS=BLOCK_SLOTS, num_warps=NUM_WARPS)
    return out


def decode_attention_triton(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                            filled: torch.Tensor, softmax_scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v for one query per row over cache slots [0, filled), masked slots left out.

    q: (B, H, 1, D); keys, values: (B, K, S, D) with H a multiple of K (grouped-query attention); mask: (B, S)
    bool, True where the query may see the slot; filled: 0-d integer tensor on the device, how many slots to
    scan. Every row must see at least one scanned slot (its own: decoding writes the new key first).
    """
    batch, heads, q_len, head_dim = q.shape
    if q_len != 1:
        raise ValueError(f"decode_attention: one query per row, got q of shape {tuple(q.shape)}")
    if keys.shape != values.shape or keys.shape[0] != batch or keys.shape[-1] != head_dim:
        raise ValueError(f"decode_attention: keys {tuple(keys.shape)} and values {tuple(values.shape)} must be "
                         f"(B, K, S, D) for q {tuple(q.shape)}")
    if heads % keys.shape[1]:
        raise ValueError(f"decode_attention: {heads} query heads are not a multiple of {keys.shape[1]} kv heads")
    if mask.shape != (batch, keys.shape[2]) or mask.dtype != torch.bool:
        raise ValueError(f"decode_attention: mask must be bool (B, S) = {(batch, keys.shape[2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if keys.stride(-1) != 1 or values.stride(-1) != 1 or q.stride(-1) != 1 or mask.stride(-1) != 1:
        raise ValueError("decode_attention: q, keys, values and mask need a unit stride in their last dim")
    scale = head_dim ** -0.5 if softmax_scale is None else softmax_scale
    return _decode_attention(q, keys, values, mask, filled, scale)
