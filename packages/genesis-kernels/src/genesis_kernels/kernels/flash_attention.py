"""FlashAttention-2 style attention in Triton: tiled online softmax forward, deterministic backward.

Forward: one program per (query block, batch * head); it streams key/value blocks, keeps the running max and
sum of the softmax in fp32, and stores the output and the base-2 log-sum-exp of each row. Causal programs stop
at the last key block a query of theirs can see, so fully masked blocks are never loaded.

Backward (no atomics, so it is deterministic): a pre-pass computes delta = rowsum(dO * O); one kernel owns a
key block and loops over query blocks to accumulate dK and dV; another owns a query block and loops over key
blocks to accumulate dQ. With grouped-query attention dK and dV are computed per query head and summed over
each group in PyTorch.

Dot operands stay in the input dtype with fp32 accumulation. fp32 inputs use IEEE products unless the caller
allowed TF32 (``torch.backends.cuda.matmul.allow_tf32``). Head dims are padded to a power of two (at least
16) with masks, and every sequence edge is masked, so any length works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ..device import gpu_family

LOG2_E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionLaunch:
    block_m: int  # query rows per tile
    block_n: int  # key rows per tile
    num_warps: int
    num_stages: int


# Launch configs by GPU family, then by head dim (<= 64, <= 128), for (forward, backward). Starting points
# from the FlashAttention-2 Triton tutorial's choices within each family's shared memory (sm_75: 64 KiB,
# sm_86/89: 100 KiB, sm_80: 164 KiB, sm_90: 228 KiB); not yet tuned on a GPU: `genesis-kernels bench`
# is how to tune them. The interpreter uses 32-row tiles so that short test sequences still cross tile edges.
LAUNCH_CONFIGS: dict[str, dict[int, tuple[AttentionLaunch, AttentionLaunch]]] = {
    "sm_75": {64: (AttentionLaunch(64, 64, 4, 2), AttentionLaunch(64, 64, 4, 1)),
              128: (AttentionLaunch(64, 32, 4, 2), AttentionLaunch(32, 32, 4, 1))},
    "sm_8x": {64: (AttentionLaunch(128, 64, 4, 3), AttentionLaunch(64, 64, 4, 2)),
              128: (AttentionLaunch(128, 32, 8, 2), AttentionLaunch(64, 32, 4, 2))},
    "sm_90": {64: (AttentionLaunch(128, 64, 4, 3), AttentionLaunch(64, 64, 4, 3)),
              128: (AttentionLaunch(128, 64, 8, 3), AttentionLaunch(64, 64, 8, 2))},
    "interpreter": {64: (AttentionLaunch(32, 32, 1, 1), AttentionLaunch(32, 32, 1, 1)),
                    128: (AttentionLaunch(32, 32, 1, 1), AttentionLaunch(32, 32, 1, 1))},
}


def launch_configs(device: torch.device, head_dim: int, q_len: int,
                   dtype: torch.dtype) -> tuple[AttentionLaunch, AttentionLaunch]:
    return family_launch_configs(gpu_family(device), head_dim, q_len, dtype)


def family_launch_configs(family: str, head_dim: int, q_len: int,
                          dtype: torch.dtype) -> tuple[AttentionLaunch, AttentionLaunch]:
    """(forward, backward) configs. Short query chunks (decoding) get query tiles no taller than needed; fp32
    tiles take half the rows and columns, since the table is sized for 2-byte elements (at full size fp32 needs
    80 KiB of shared memory in sm_75's backward and 128 KiB in sm_8x's forward: tests/.../test_gpu_compile.py)."""
    by_head_dim = LAUNCH_CONFIGS[family]
    configs = by_head_dim[64] if head_dim <= 64 else by_head_dim[128]
    # The interpreter's tiles are small already (test sequences must cross their edges) and have no shared memory.
    shrink = 2 if dtype.itemsize > 2 and family != "interpreter" else 1
    fitted_m = max(16, triton.next_power_of_2(q_len))  # tl.dot needs at least 16 rows
    return tuple(replace(c, block_m=max(16, min(c.block_m // shrink, fitted_m)),
                         block_n=max(16, c.block_n // shrink)) for c in configs)


@triton.jit
def _tile(base, positions, offs_d, stride_s, stride_d):
    """Pointers to a (positions x head dims) tile of one batch and head, whose first element is at base."""
    return base + positions[:, None] * stride_s + offs_d[None, :] * stride_d


@triton.jit
def _forward_tile(acc, row_max, row_sum, q, k_base, v_base, start_n, rows, offs_n, offs_d, dim_ok, k_len,
                  causal_offset, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
                  CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Fold one key block into the running softmax of a query block. Unmasked tiles lie wholly inside both the
    key length and every row's causal window, so they skip the sequence masks."""
    cols = start_n + offs_n
    col_ok = cols < k_len
    if MASKED:
        k_t = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None] * stride_kd,
                      mask=col_ok[None, :] & dim_ok[:, None], other=0.0)
        v = tl.load(_tile(v_base, cols, offs_d, stride_vs, stride_vd), mask=col_ok[:, None] & dim_ok[None, :],
                    other=0.0)
    else:
        k_t = tl.load(k_base + cols[None, :] * stride_ks + offs_d[:, None] * stride_kd, mask=dim_ok[:, None],
                      other=0.0)
        v = tl.load(_tile(v_base, cols, offs_d, stride_vs, stride_vd), mask=dim_ok[None, :], other=0.0)
    # Scores in base 2: exp2(s * scale * log2 e) == exp(s * scale).
    scores = tl.dot(q, k_t, input_precision=DOT_PRECISION) * qk_scale
    if MASKED:
        visible = col_ok[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + causal_offset)
        scores = tl.where(visible, scores, float("-inf"))

    new_max = tl.maximum(row_max, tl.max(scores, 1))
    p = tl.exp2(scores - new_max[:, None])
    rescale = tl.exp2(row_max - new_max)
    row_sum = row_sum * rescale + tl.sum(p, 1)
    acc = acc * rescale[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, new_max, row_sum


@triton.jit
def _program_heads(num_heads, group_size):
    """This program's (batch * num_heads + head, batch, query head, key/value head), from grid axis 1."""
    batch_head = tl.program_id(1)
    head = batch_head % num_heads
    return batch_head, batch_head // num_heads, head, head // group_size


@triton.jit
def _block(start, length, head_dim, BLOCK: tl.constexpr, BLOCK_D: tl.constexpr):
    """Positions start .. start + BLOCK - 1 of a sequence of `length` with the head dims: (positions, which positions
    exist, head-dim offsets, which offsets exist, the mask of the (positions x dims) tile)."""
    positions = start + tl.arange(0, BLOCK)
    offs_d = tl.arange(0, BLOCK_D)
    ok = positions < length
    dim_ok = offs_d < head_dim
    return positions, ok, offs_d, dim_ok, ok[:, None] & dim_ok[None, :]


@triton.jit
def _key_block_bounds(row_start, q_len, k_len, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Bottom-right causal alignment: query i sees key j iff j <= i + causal_offset. For the query block from
    row_start, key blocks below unmasked_end are seen whole by every row; blocks from k_end on by none (skipped)."""
    causal_offset = k_len - q_len
    if CAUSAL:
        k_end = tl.minimum(k_len, row_start + BLOCK_M + causal_offset)
        unmasked_end = tl.minimum(k_len, row_start + causal_offset + 1) // BLOCK_N * BLOCK_N
    else:
        k_end = k_len
        unmasked_end = k_len // BLOCK_N * BLOCK_N
    return causal_offset, k_end, unmasked_end


@triton.jit
def attention_forward_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_ob, stride_oh, stride_os, stride_od,
    num_heads, group_size, q_len, k_len, head_dim, qk_scale,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch_head, batch, head, kv_head = _program_heads(num_heads, group_size)
    row_start = tl.program_id(0) * BLOCK_M
    rows, row_ok, offs_d, dim_ok, q_mask = _block(row_start, q_len, head_dim, BLOCK_M, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(_tile(Q + batch * stride_qb + head * stride_qh, rows, offs_d, stride_qs, stride_qd), mask=q_mask,
                other=0.0)
    k_base = K + batch * stride_kb + kv_head * stride_kh
    v_base = V + batch * stride_vb + kv_head * stride_vh

    causal_offset, k_end, unmasked_end = _key_block_bounds(row_start, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N)

    row_max = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, unmasked_end, BLOCK_N):
        acc, row_max, row_sum = _forward_tile(
            acc, row_max, row_sum, q, k_base, v_base, start_n, rows, offs_n, offs_d, dim_ok, k_len, causal_offset,
            stride_ks, stride_kd, stride_vs, stride_vd, qk_scale, CAUSAL, False, DOT_PRECISION)
    for start_n in range(unmasked_end, k_end, BLOCK_N):
        acc, row_max, row_sum = _forward_tile(
            acc, row_max, row_sum, q, k_base, v_base, start_n, rows, offs_n, offs_d, dim_ok, k_len, causal_offset,
            stride_ks, stride_kd, stride_vs, stride_vd, qk_scale, CAUSAL, True, DOT_PRECISION)

    out = acc / row_sum[:, None]
    tl.store(_tile(O + batch * stride_ob + head * stride_oh, rows, offs_d, stride_os, stride_od),
             out.to(O.dtype.element_ty), mask=q_mask)
    tl.store(LSE + batch_head * q_len + rows, row_max + tl.log2(row_sum), mask=row_ok)


@triton.jit
def attention_backward_delta_kernel(
    O, DO, DELTA,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_dob, stride_doh, stride_dos, stride_dod,
    num_heads, q_len, head_dim,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch_head, batch, head, _ = _program_heads(num_heads, 1)
    rows, row_ok, offs_d, _, mask = _block(tl.program_id(0) * BLOCK_M, q_len, head_dim, BLOCK_M, BLOCK_D)
    o = tl.load(_tile(O + batch * stride_ob + head * stride_oh, rows, offs_d, stride_os, stride_od),
                mask=mask, other=0.0).to(tl.float32)
    do = tl.load(_tile(DO + batch * stride_dob + head * stride_doh, rows, offs_d, stride_dos, stride_dod),
                 mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + batch_head * q_len + rows, tl.sum(o * do, 1), mask=row_ok)


@triton.jit
def _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, start_m, offs_m, offs_d, dim_ok, cols, col_ok,
               q_len, causal_offset, stride_qs, stride_qd, stride_dos, stride_dod, qk_scale,
               CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add one query block's share to a key block's dK and dV. Unmasked tiles hold only real query rows, each
    seeing every key of the block. (Padded key rows need no mask: they only touch their own dK/dV rows, which
    are never stored.)"""
    rows = start_m + offs_m
    row_ok = rows < q_len
    if MASKED:
        q_mask = row_ok[:, None] & dim_ok[None, :]
        lse = tl.load(lse_base + rows, mask=row_ok, other=0.0)
        delta = tl.load(delta_base + rows, mask=row_ok, other=0.0)
    else:
        q_mask = dim_ok[None, :]
        lse = tl.load(lse_base + rows)
        delta = tl.load(delta_base + rows)
    q = tl.load(_tile(q_base, rows, offs_d, stride_qs, stride_qd), mask=q_mask, other=0.0)
    do = tl.load(_tile(do_base, rows, offs_d, stride_dos, stride_dod), mask=q_mask, other=0.0)

    # Transposed probabilities P^T (keys x queries), recomputed from the saved log-sum-exp.
    p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale - lse[None, :])
    if MASKED:
        visible = col_ok[:, None] & row_ok[None, :]
        if CAUSAL:
            visible = visible & (cols[:, None] <= rows[None, :] + causal_offset)
        p_t = tl.where(visible, p_t, 0.0)
    dv += tl.dot(p_t.to(do.dtype), do, input_precision=DOT_PRECISION)
    dp_t = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    ds_t = p_t * (dp_t - delta[None, :])
    dk += tl.dot(ds_t.to(q.dtype), q, input_precision=DOT_PRECISION)
    return dk, dv


@triton.jit
def attention_backward_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_dkb, stride_dkh, stride_dks, stride_dkd,
    stride_dvb, stride_dvh, stride_dvs, stride_dvd,
    num_heads, group_size, q_len, k_len, head_dim, qk_scale, softmax_scale,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One key block of one query head; dK and dV land in per-query-head buffers (summed over GQA groups later).
    batch_head, batch, head, kv_head = _program_heads(num_heads, group_size)
    col_start = tl.program_id(0) * BLOCK_N
    cols, col_ok, offs_d, dim_ok, kv_mask = _block(col_start, k_len, head_dim, BLOCK_N, BLOCK_D)
    offs_m = tl.arange(0, BLOCK_M)
    k = tl.load(_tile(K + batch * stride_kb + kv_head * stride_kh, cols, offs_d, stride_ks, stride_kd),
                mask=kv_mask, other=0.0)
    v = tl.load(_tile(V + batch * stride_vb + kv_head * stride_vh, cols, offs_d, stride_vs, stride_vd),
                mask=kv_mask, other=0.0)
    q_base = Q + batch * stride_qb + head * stride_qh
    do_base = DO + batch * stride_dob + head * stride_doh
    lse_base = LSE + batch_head * q_len
    delta_base = DELTA + batch_head * q_len

    # Query blocks before m_start see none of this key block; from band_end on they see all of it, and up to
    # full_end they are free of padding rows: only [m_start, band_end) and [full_end, q_len) need masks.
    causal_offset = k_len - q_len
    if CAUSAL:
        m_start = tl.maximum(col_start - causal_offset, 0) // BLOCK_M * BLOCK_M
        band_end = tl.minimum(tl.cdiv(tl.maximum(col_start + BLOCK_N - 1 - causal_offset, 0), BLOCK_M) * BLOCK_M,
                              q_len)
    else:
        m_start = 0
        band_end = 0
    full_end = tl.maximum(band_end, q_len // BLOCK_M * BLOCK_M)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    for start_m in range(m_start, band_end, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, start_m, offs_m, offs_d, dim_ok,
                            cols, col_ok, q_len, causal_offset, stride_qs, stride_qd, stride_dos, stride_dod,
                            qk_scale, CAUSAL, True, DOT_PRECISION)
    for start_m in range(band_end, full_end, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, start_m, offs_m, offs_d, dim_ok,
                            cols, col_ok, q_len, causal_offset, stride_qs, stride_qd, stride_dos, stride_dod,
                            qk_scale, CAUSAL, False, DOT_PRECISION)
    for start_m in range(full_end, q_len, BLOCK_M):
        dk, dv = _dkdv_tile(dk, dv, k, v, q_base, do_base, lse_base, delta_base, start_m, offs_m, offs_d, dim_ok,
                            cols, col_ok, q_len, causal_offset, stride_qs, stride_qd, stride_dos, stride_dod,
                            qk_scale, CAUSAL, True, DOT_PRECISION)

    dk *= softmax_scale
    tl.store(_tile(DK + batch * stride_dkb + head * stride_dkh, cols, offs_d, stride_dks, stride_dkd),
             dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(_tile(DV + batch * stride_dvb + head * stride_dvh, cols, offs_d, stride_dvs, stride_dvd),
             dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_tile(dq, q, do, lse, delta, k_base, v_base, start_n, rows, row_ok, offs_n, offs_d, dim_ok, k_len,
             causal_offset, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
             CAUSAL: tl.constexpr, MASKED: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Add one key block's share to a query block's dQ; unmasked tiles as in :func:`_forward_tile`."""
    cols = start_n + offs_n
    col_ok = cols < k_len
    if MASKED:
        kv_mask = col_ok[:, None] & dim_ok[None, :]
    else:
        kv_mask = dim_ok[None, :]
    k = tl.load(_tile(k_base, cols, offs_d, stride_ks, stride_kd), mask=kv_mask, other=0.0)
    v = tl.load(_tile(v_base, cols, offs_d, stride_vs, stride_vd), mask=kv_mask, other=0.0)

    p = tl.exp2(tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale - lse[:, None])
    if MASKED:
        visible = row_ok[:, None] & col_ok[None, :]
        if CAUSAL:
            visible = visible & (cols[None, :] <= rows[:, None] + causal_offset)
        p = tl.where(visible, p, 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
    return dq


@triton.jit
def attention_backward_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_ks, stride_kd,
    stride_vb, stride_vh, stride_vs, stride_vd,
    stride_dob, stride_doh, stride_dos, stride_dod,
    stride_dqb, stride_dqh, stride_dqs, stride_dqd,
    num_heads, group_size, q_len, k_len, head_dim, qk_scale, softmax_scale,
    CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    batch_head, batch, head, kv_head = _program_heads(num_heads, group_size)
    row_start = tl.program_id(0) * BLOCK_M
    rows, row_ok, offs_d, dim_ok, q_mask = _block(row_start, q_len, head_dim, BLOCK_M, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    q = tl.load(_tile(Q + batch * stride_qb + head * stride_qh, rows, offs_d, stride_qs, stride_qd),
                mask=q_mask, other=0.0)
    do = tl.load(_tile(DO + batch * stride_dob + head * stride_doh, rows, offs_d, stride_dos, stride_dod),
                 mask=q_mask, other=0.0)
    lse = tl.load(LSE + batch_head * q_len + rows, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + batch_head * q_len + rows, mask=row_ok, other=0.0)
    k_base = K + batch * stride_kb + kv_head * stride_kh
    v_base = V + batch * stride_vb + kv_head * stride_vh

    # The same split of key blocks as the forward. Padding query rows need no mask: their dQ is never stored.
    causal_offset, k_end, unmasked_end = _key_block_bounds(row_start, q_len, k_len, CAUSAL, BLOCK_M, BLOCK_N)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, unmasked_end, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse, delta, k_base, v_base, start_n, rows, row_ok, offs_n, offs_d, dim_ok, k_len,
                      causal_offset, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
                      CAUSAL, False, DOT_PRECISION)
    for start_n in range(unmasked_end, k_end, BLOCK_N):
        dq = _dq_tile(dq, q, do, lse, delta, k_base, v_base, start_n, rows, row_ok, offs_n, offs_d, dim_ok, k_len,
                      causal_offset, stride_ks, stride_kd, stride_vs, stride_vd, qk_scale,
                      CAUSAL, True, DOT_PRECISION)

    dq *= softmax_scale
    tl.store(_tile(DQ + batch * stride_dqb + head * stride_dqh, rows, offs_d, stride_dqs, stride_dqd),
             dq.to(DQ.dtype.element_ty), mask=q_mask)


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    # Only fp32 dots have a choice; "tf32" is Triton's default and what fp16/bf16 dots ignore.
    if dtype == torch.float32 and not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32):
        return "ieee"
    return "tf32"


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


class FlashAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, softmax_scale):
        batch, num_heads, q_len, head_dim = q.shape
        k_len = k.shape[2]
        forward_launch, _ = launch_configs(q.device, head_dim, q_len, q.dtype)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = torch.empty((batch, num_heads, q_len), dtype=torch.float32, device=q.device)
        grid = (triton.cdiv(q_len, forward_launch.block_m), batch * num_heads)
        attention_forward_kernel[grid](
            q, k, v, out, lse, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
            num_heads, num_heads // k.shape[1], q_len, k_len, head_dim, softmax_scale * LOG2_E,
            CAUSAL=causal, DOT_PRECISION=_dot_precision(q.dtype, q.device),
            BLOCK_M=forward_launch.block_m, BLOCK_N=forward_launch.block_n, BLOCK_D=_block_d(head_dim),
            num_warps=forward_launch.num_warps, num_stages=forward_launch.num_stages,
        )
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal = causal
        ctx.softmax_scale = softmax_scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        batch, num_heads, q_len, head_dim = q.shape
        kv_heads, k_len = k.shape[1], k.shape[2]
        group_size = num_heads // kv_heads
        _, launch = launch_configs(q.device, head_dim, q_len, q.dtype)
        block_d = _block_d(head_dim)
        precision = _dot_precision(q.dtype, q.device)
        scale = ctx.softmax_scale

        delta = torch.empty_like(lse)
        attention_backward_delta_kernel[(triton.cdiv(q_len, launch.block_m), batch * num_heads)](
            out, grad_out, delta, *out.stride(), *grad_out.stride(), num_heads, q_len, head_dim,
            BLOCK_M=launch.block_m, BLOCK_D=block_d, num_warps=launch.num_warps,
        )

        # Per-query-head dK/dV: with GQA they are summed over each group below, in a fixed order.
        grad_kv_dtype = k.dtype if group_size == 1 else torch.float32
        dk = torch.empty((batch, num_heads, k_len, head_dim), dtype=grad_kv_dtype, device=k.device)
        dv = torch.empty_like(dk)
        attention_backward_dkdv_kernel[(triton.cdiv(k_len, launch.block_n), batch * num_heads)](
            q, k, v, grad_out, lse, delta, dk, dv,
            *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dk.stride(), *dv.stride(),
            num_heads, group_size, q_len, k_len, head_dim, scale * LOG2_E, scale,
            CAUSAL=ctx.causal, DOT_PRECISION=precision,
            BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, BLOCK_D=block_d,
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        attention_backward_dq_kernel[(triton.cdiv(q_len, launch.block_m), batch * num_heads)](
            q, k, v, grad_out, lse, delta, dq,
            *q.stride(), *k.stride(), *v.stride(), *grad_out.stride(), *dq.stride(),
            num_heads, group_size, q_len, k_len, head_dim, scale * LOG2_E, scale,
            CAUSAL=ctx.causal, DOT_PRECISION=precision,
            BLOCK_M=launch.block_m, BLOCK_N=launch.block_n, BLOCK_D=block_d,
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
        if group_size > 1:
            dk = dk.view(batch, kv_heads, group_size, k_len, head_dim).sum(2).to(k.dtype)
            dv = dv.view(batch, kv_heads, group_size, k_len, head_dim).sum(2).to(v.dtype)
        return dq, dk, dv, None, None


def flash_attention_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
                           softmax_scale: float | None = None) -> torch.Tensor:
    """The Triton path of :func:`genesis_kernels.flash_attention` (same arguments, no dispatch)."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"flash_attention: q, k, v must be (batch, heads, seq, head_dim), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise ValueError(f"flash_attention: k and v must have one shape, with q's batch and head_dim; got "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"flash_attention: {q.shape[1]} query heads are not a multiple of {k.shape[1]} kv heads")
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"causal attention needs q_len <= k_len (got {q.shape[2]} queries, {k.shape[2]} keys): "
                         "with bottom-right alignment the first queries would see no key")
    if q.shape[2] == 0 or k.shape[2] == 0:
        raise ValueError("flash_attention: empty sequence")
    if torch.is_autocast_enabled(q.device.type):
        # SDPA runs in autocast's lower precision; so does this path.
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    if q.dtype != k.dtype or q.dtype != v.dtype:
        raise ValueError(f"flash_attention: q, k, v dtypes differ ({q.dtype}, {k.dtype}, {v.dtype})")
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[3])
    return FlashAttentionFunction.apply(q, k, v, causal, scale)
