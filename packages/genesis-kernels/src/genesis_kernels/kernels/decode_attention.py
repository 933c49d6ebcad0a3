"""One decoding step of attention in Triton: rotate the new query and key (RoPE), append the new key and value to a
static KV cache, and attend the query over the cache. The attention of batch-1 decoding.

Why one kernel: on an H200, deep_narrow_40's compiled decode step spent 12 kernels a layer, ~1 us of launch gap
each on top of their work. The rotation and the cache writes were three of them (Inductor kernels of ~1.3 us each)
and attention a fourth. Here one program per (row, query head) rotates its query and its key/value head's new key,
the first program of each group writes the new key and value into the cache, and the query attends over the slots
filled before this step (read from the cache; the write position is a count on the device, so one compiled step
or CUDA graph serves every position) plus the new slot (from registers: no program reads the slot being written
in the same launch), skipping masked slots (left padding), with an online softmax in fp32, FlashAttention style.

Inference only (no backward). Registered as the op ``genesis_kernels::decode_attention`` through
``torch.library.triton_op`` (mutating the cache) so that ``torch.compile`` keeps it in its graph. The model's KV
cache reaches it through ``genesis_kernels.decode_attention`` (dispatch.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# The fastest config of benchmarks/tuning/decode_kernel_configs.py's sweep on deep_narrow_40's decoding (figures:
# benchmarks/RESULTS.md, "Where the shipped constants come from").
BLOCK_SLOTS = 128
NUM_WARPS = 4


@triton.jit
def _rotated_halves(base, cos_lo, cos_hi, sin_lo, sin_hi, dims, half, dim_mask):
    """A head's two halves (x_lo, x_hi) rotated by RoPE's half-split rule (sin carries the first half's sign),
    rounded to the input dtype as the torch path's rotation is, returned in fp32."""
    x_lo = tl.load(base + dims, mask=dim_mask, other=0.0)
    x_hi = tl.load(base + half + dims, mask=dim_mask, other=0.0)
    lo = x_lo.to(tl.float32) * cos_lo + x_hi.to(tl.float32) * sin_lo
    hi = x_hi.to(tl.float32) * cos_hi + x_lo.to(tl.float32) * sin_hi
    return lo.to(x_lo.dtype).to(tl.float32), hi.to(x_lo.dtype).to(tl.float32)


@triton.jit
def decode_attention_kernel(QKV, COS, SIN, K, V, MASK, SLOT, OUT, stride_qkv, stride_rope, stride_kb, stride_kh,
                            stride_ks, stride_vb, stride_vh, stride_vs, stride_mb, stride_ob, head_dim, n_slots,
                            scale, N_HEADS: tl.constexpr, GROUPS: tl.constexpr, BLOCK_HALF: tl.constexpr,
                            BLOCK_SLOTS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1).to(tl.int64)
    kv_head = head // GROUPS
    half = head_dim // 2
    # Heads are handled as two halves, the pairs RoPE rotates together; q.k is the sum over both halves.
    dims = tl.arange(0, BLOCK_HALF)
    dim_mask = dims < half
    cos_lo = tl.load(COS + row * stride_rope + dims, mask=dim_mask, other=0.0)
    cos_hi = tl.load(COS + row * stride_rope + half + dims, mask=dim_mask, other=0.0)
    sin_lo = tl.load(SIN + row * stride_rope + dims, mask=dim_mask, other=0.0)
    sin_hi = tl.load(SIN + row * stride_rope + half + dims, mask=dim_mask, other=0.0)
    qkv = QKV + row * stride_qkv
    q_lo, q_hi = _rotated_halves(qkv + head * head_dim, cos_lo, cos_hi, sin_lo, sin_hi, dims, half, dim_mask)
    # Cast after scaling: Inductor passes a Python float argument as fp64, which would make every score fp64.
    q_lo, q_hi = (q_lo * scale).to(tl.float32), (q_hi * scale).to(tl.float32)
    k_new_lo, k_new_hi = _rotated_halves(qkv + (N_HEADS + kv_head) * head_dim, cos_lo, cos_hi, sin_lo, sin_hi,
                                         dims, half, dim_mask)
    v_new = qkv + (N_HEADS + N_HEADS // GROUPS + kv_head) * head_dim
    v_new_lo = tl.load(v_new + dims, mask=dim_mask, other=0.0)
    v_new_hi = tl.load(v_new + half + dims, mask=dim_mask, other=0.0)

    slot = tl.load(SLOT)  # this step's slot; every slot below it is filled
    k_base = K + row * stride_kb + kv_head * stride_kh
    v_base = V + row * stride_vb + kv_head * stride_vh
    # The first query head of each group writes its key/value head's new entry (inside the cache only).
    write = dims < tl.where((head % GROUPS == 0) & (slot < n_slots), half, 0)
    tl.store(k_base + slot * stride_ks + dims, k_new_lo.to(K.dtype.element_ty), mask=write)
    tl.store(k_base + slot * stride_ks + half + dims, k_new_hi.to(K.dtype.element_ty), mask=write)
    tl.store(v_base + slot * stride_vs + dims, v_new_lo.to(V.dtype.element_ty), mask=write)
    tl.store(v_base + slot * stride_vs + half + dims, v_new_hi.to(V.dtype.element_ty), mask=write)

    m = tl.full((), float("-inf"), tl.float32)  # running max of the scores
    total = tl.zeros((), dtype=tl.float32)  # running sum of exp(score - m)
    acc_lo = tl.zeros((BLOCK_HALF,), dtype=tl.float32)
    acc_hi = tl.zeros((BLOCK_HALF,), dtype=tl.float32)
    filled = tl.minimum(slot, n_slots)
    for start in range(0, filled, BLOCK_SLOTS):
        slots = start + tl.arange(0, BLOCK_SLOTS)
        in_cache = slots < filled
        visible = tl.load(MASK + row * stride_mb + slots, mask=in_cache, other=0) != 0
        tile_mask = in_cache[:, None] & dim_mask[None, :]
        # Keys and values issued together: all four loads in flight before the first use.
        k_lo = tl.load(k_base + slots[:, None] * stride_ks + dims[None, :], mask=tile_mask, other=0.0)
        k_hi = tl.load(k_base + slots[:, None] * stride_ks + half + dims[None, :], mask=tile_mask, other=0.0)
        v_lo = tl.load(v_base + slots[:, None] * stride_vs + dims[None, :], mask=tile_mask, other=0.0)
        v_hi = tl.load(v_base + slots[:, None] * stride_vs + half + dims[None, :], mask=tile_mask, other=0.0)
        scores = tl.sum(k_lo.to(tl.float32) * q_lo[None, :], axis=1) + \
            tl.sum(k_hi.to(tl.float32) * q_hi[None, :], axis=1)
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=0))
        # While every slot so far is masked m_new is -inf: shift by 0 instead, so exp gives 0, not NaN.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(scores - shift)
        rescale = tl.exp(m - shift)
        acc_lo = acc_lo * rescale + tl.sum(p[:, None] * v_lo.to(tl.float32), axis=0)
        acc_hi = acc_hi * rescale + tl.sum(p[:, None] * v_hi.to(tl.float32), axis=0)
        total = total * rescale + tl.sum(p, axis=0)
        m = m_new

    # The new slot, from registers. Decoding always lets a query see its own slot; the mask still decides.
    visible = tl.load(MASK + row * stride_mb + tl.minimum(slot, n_slots - 1)) != 0
    score = tl.sum(k_new_lo * q_lo, axis=0) + tl.sum(k_new_hi * q_hi, axis=0)
    score = tl.where(visible, score, float("-inf"))
    m_new = tl.maximum(m, score)
    shift = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp(score - shift)
    rescale = tl.exp(m - shift)
    acc_lo = acc_lo * rescale + p * v_new_lo.to(tl.float32)
    acc_hi = acc_hi * rescale + p * v_new_hi.to(tl.float32)
    total = total * rescale + p

    out = OUT + row * stride_ob + head * head_dim
    tl.store(out + dims, (acc_lo / total).to(OUT.dtype.element_ty), mask=dim_mask)
    tl.store(out + half + dims, (acc_hi / total).to(OUT.dtype.element_ty), mask=dim_mask)


@triton_op("genesis_kernels::decode_attention", mutates_args={"keys", "values"})
def _decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                      values: torch.Tensor, mask: torch.Tensor, slot: torch.Tensor, n_heads: int,
                      scale: float) -> torch.Tensor:
    batch, head_dim = qkv.shape[0], keys.shape[-1]
    out = torch.empty(batch, 1, n_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    wrap_triton(decode_attention_kernel)[(batch, n_heads)](
        qkv, cos, sin, keys, values, mask, slot, out, qkv.stride(0), cos.stride(0), keys.stride(0), keys.stride(1),
        keys.stride(2), values.stride(0), values.stride(1), values.stride(2), mask.stride(0), out.stride(0),
        head_dim, keys.shape[2], scale, N_HEADS=n_heads, GROUPS=n_heads // keys.shape[1],
        BLOCK_HALF=triton.next_power_of_2(head_dim // 2), BLOCK_SLOTS=BLOCK_SLOTS, num_warps=NUM_WARPS)
    return out


def decode_attention_triton(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                            values: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor,
                            softmax_scale: float | None = None) -> torch.Tensor:
    """One new token a row: rotate its query and key, write key and value into the cache at ``slots[0]``, and
    return softmax(q k^T * scale) v over the cache's slots [0, slots[0]], masked slots left out: (B, 1, H, D).

    qkv: (B, 1, H + 2K, D) the fused projection's output (queries, keys, values; RoPE not yet applied); cos, sin:
    (B, 1, D) fp32 rotary tables of each row's position, the first half of sin negated (see fallback.apply_rotary);
    keys, values: (B, K, S, D) with H a multiple of K (grouped-query attention); mask: (B, 1, S) bool, True where
    the query may see the slot; slots: (1,) integer tensor on the device, the slot this step writes (all below it
    are filled). Every row must see at least one slot (its own: decoding writes the new key first).
    """
    batch, q_len, heads_total, head_dim = qkv.shape
    kv_heads, n_slots = keys.shape[1], keys.shape[2]
    n_heads = heads_total - 2 * kv_heads
    if q_len != 1:
        raise ValueError(f"decode_attention: one new token per row, got qkv of shape {tuple(qkv.shape)}")
    if keys.shape != values.shape or keys.shape[0] != batch or keys.shape[-1] != head_dim:
        raise ValueError(f"decode_attention: keys {tuple(keys.shape)} and values {tuple(values.shape)} must be "
                         f"(B, K, S, D) for qkv {tuple(qkv.shape)}")
    if n_heads <= 0 or n_heads % kv_heads:
        raise ValueError(f"decode_attention: qkv's {heads_total} heads are not H query heads + 2 x {kv_heads} "
                         "key/value heads with H a multiple of the key/value heads")
    if head_dim % 2:
        raise ValueError(f"decode_attention: head_dim {head_dim} is odd (RoPE rotates pairs)")
    if cos.shape != (batch, 1, head_dim) or sin.shape != cos.shape:
        raise ValueError(f"decode_attention: cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must be "
                         f"(B, 1, D) = {(batch, 1, head_dim)}")
    if mask.shape != (batch, 1, n_slots) or mask.dtype != torch.bool:
        raise ValueError(f"decode_attention: mask must be bool (B, 1, S) = {(batch, 1, n_slots)}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if any(t.stride(-1) != 1 for t in (keys, values, mask, cos, sin)) or qkv.stride(-1) != 1 \
            or qkv.stride(-2) != head_dim:
        raise ValueError("decode_attention: keys, values, mask, cos and sin need a unit stride in their last dim, "
                         "and qkv's heads must lie back to back")
    scale = head_dim ** -0.5 if softmax_scale is None else softmax_scale
    return _decode_attention(qkv, cos, sin, keys, values, mask, slots, n_heads, scale)
