"""Plain float64 versions of the ops, written out from their documented semantics (dispatch.py) and independently
of fallback.py: what ``genesis-kernels verify`` and the kernel tests check both backends against.

Each function computes in float64 whatever its inputs' dtype (the upcast keeps autograd, so gradients can be
compared too) and favours the obvious formula over speed or memory: ``attention`` materializes the score matrix,
which also makes it the quadratic-memory baseline that ``genesis-kernels bench`` times (``dtype=None``).
"""

from __future__ import annotations

import math

import torch


def _float64(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [None if t is None else t.to(torch.float64) for t in tensors]


def _repeat_kv_heads(kv: torch.Tensor, heads: int, dim: int) -> torch.Tensor:
    """Each of kv's heads (along ``dim``) repeated for the ``heads // kv_heads`` query heads that share it (GQA)."""
    kv_heads = kv.shape[dim]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads are not a multiple of {kv_heads} kv heads")
    # No copy without grouping: bench times this on long sequences.
    return kv if heads == kv_heads else kv.repeat_interleave(heads // kv_heads, dim=dim)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
              softmax_scale: float | None = None, *, dtype: torch.dtype | None = torch.float64) -> torch.Tensor:
    """softmax(q k^T * scale) v on (batch, heads, seq, head_dim), the (q_len, k_len) scores in memory.

    k and v may have fewer heads than q (query head h reads kv head h // (heads // kv_heads)). ``causal`` aligns
    the last query with the last key (a query chunk after a KV prefix): query i sees key j iff
    j <= i + (k_len - q_len). ``softmax_scale`` defaults to head_dim ** -0.5. Computed in ``dtype``; None keeps
    the inputs' dtype (bench's naive attention).
    """
    if dtype is not None:
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    k, v = _repeat_kv_heads(k, q.shape[1], 1), _repeat_kv_heads(v, q.shape[1], 1)
    scale = 1 / math.sqrt(q.shape[-1]) if softmax_scale is None else softmax_scale
    scores = (q @ k.transpose(-2, -1)) * scale
    if causal:
        q_len, k_len = q.shape[-2], k.shape[-2]
        if q_len > k_len:
            raise ValueError(f"causal attention needs q_len <= k_len (got {q_len} queries, {k_len} keys)")
        query = torch.arange(q_len, device=q.device)[:, None]
        key = torch.arange(k_len, device=q.device)[None, :]
        scores = scores.masked_fill(key > query + (k_len - q_len), float("-inf"))
    return scores.softmax(dim=-1) @ v


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    gate, up = _float64(gate, up)
    return _silu(gate) * up


def residual_norm(x: torch.Tensor, fx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  alpha: float = 1.0, eps: float = 1e-6, norm: str = "rms") -> torch.Tensor:
    """DeepNorm's post-norm residual over the last dim: h = alpha * x + fx, then RMSNorm h / rms(h) * weight
    (+ bias), or with ``norm="layer"`` LayerNorm (h - mean(h)) / std(h) * weight (+ bias), std biased."""
    x, fx, weight, bias = _float64(x, fx, weight, bias)
    h = alpha * x + fx
    if norm == "layer":
        h = h - h.mean(dim=-1, keepdim=True)
    elif norm != "rms":
        raise ValueError(f"residual_norm: norm={norm!r} is not one of 'rms', 'layer'")
    y = h / torch.sqrt(h.pow(2).mean(dim=-1, keepdim=True) + eps) * weight
    return y if bias is None else y + bias


def matvec(x: torch.Tensor, weight: torch.Tensor, gated: bool = False) -> torch.Tensor:
    """x @ weight.T; ``gated``: x is [gate, up] along its last dim and the product is of silu(gate) * up."""
    x, weight = _float64(x, weight)
    if gated:
        width = x.shape[-1] // 2
        x = _silu(x[..., :width]) * x[..., width:]
    return x @ weight.T


def residual_norm_matvec(x: torch.Tensor, fx: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                         alpha: float = 1.0, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, h @ weight.T) with h = RMSNorm(alpha * x + fx) * norm_weight."""
    h = residual_norm(x, fx, norm_weight, None, alpha, eps, "rms")
    return h, matvec(h, weight)


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE on the last dim (size D), rotating each pair (x1, x2) = (x_i, x_{i+D/2}) to
    (x1 cos - x2 sin, x2 cos + x1 sin); the tables hold [cos, cos] and [-sin, sin], the sign in sin's first half."""
    x, cos, sin = _float64(x, cos, sin)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos[..., :half] + x2 * sin[..., :half],
                      x2 * cos[..., half:] + x1 * sin[..., half:]], dim=-1)


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                     values: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor,
                     softmax_scale: float | None = None) -> torch.Tensor:
    """New tokens through a key/value cache, as ``genesis_kernels.decode_attention``: returns (B, T, H, D).

    qkv (B, T, H + 2K, D) holds queries, keys and values; queries and keys are rotated by the (B, T, D) tables
    (:func:`rotary`); keys and values are written into the (B, K, S, D) float64 cache ``keys``/``values`` in place
    at ``slots`` (T,); each token then attends under ``mask`` (B, T, S) over the slots up to the last one written
    (those beyond hold nothing yet and are never read).
    """
    if keys.dtype != torch.float64 or values.dtype != torch.float64:
        raise TypeError("decode_attention writes the cache in place: pass float64 copies of keys and values")
    qkv, cos, sin = _float64(qkv, cos, sin)
    head_dim, kv_heads = qkv.shape[-1], keys.shape[1]
    heads = qkv.shape[2] - 2 * kv_heads
    q, k, v = qkv[:, :, :heads], qkv[:, :, heads:heads + kv_heads], qkv[:, :, heads + kv_heads:]
    q, k = rotary(q, cos[:, :, None], sin[:, :, None]), rotary(k, cos[:, :, None], sin[:, :, None])
    keys[:, :, slots] = k.transpose(1, 2)
    values[:, :, slots] = v.transpose(1, 2)
    seen = int(slots.max()) + 1
    cached_k = _repeat_kv_heads(keys[:, :, :seen], heads, 1)  # (B, H, seen, D)
    cached_v = _repeat_kv_heads(values[:, :, :seen], heads, 1)
    scale = 1 / math.sqrt(head_dim) if softmax_scale is None else softmax_scale
    scores = torch.einsum("bthd,bhsd->bhts", q, cached_k) * scale
    scores = scores.masked_fill(~mask[:, None, :, :seen], float("-inf"))
    return torch.einsum("bhts,bhsd->bthd", scores.softmax(dim=-1), cached_v)
