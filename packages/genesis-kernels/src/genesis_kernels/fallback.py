"""Eager PyTorch versions of the ops: what runs on CPUs, under ``GENESIS_KERNELS_BACKEND=torch``, and
wherever the Triton kernels cannot serve a call.

Each function is the plain PyTorch call and nothing more, so that it costs exactly what calling SDPA or the
eager ops directly costs, traces under ``torch.compile(fullgraph=True)`` and follows autocast's rules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ``enable_gqa`` arrived in torch 2.5; older versions get the key/value heads repeated instead.
_SDPA_HAS_GQA = torch.torch_version.TorchVersion(torch.__version__) >= (2, 5)


def repeat_kv_heads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k and v with each head repeated to q's head count (grouped-query attention without enable_gqa)."""
    group = q.shape[-3] // k.shape[-3]
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)


def bottom_right_causal_mask(q_len: int, k_len: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (q_len, k_len) mask, True where query i may see key j, i.e. j <= i + (k_len - q_len).

    This is FlashAttention >= 2.1's alignment: the last query sits at the last key, which is what a query
    chunk appended to a KV prefix needs. SDPA's ``is_causal`` aligns the first query with the first key.
    """
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=k_len - q_len)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
              softmax_scale: float | None = None) -> torch.Tensor:
    """SDPA on (batch, heads, seq, head_dim); bottom-right causal when q and k lengths differ; GQA."""
    q_len, k_len = q.shape[-2], k.shape[-2]
    extra = {}
    if q.shape[-3] != k.shape[-3]:
        if _SDPA_HAS_GQA:
            extra["enable_gqa"] = True
        else:
            k, v = repeat_kv_heads(q, k, v)
    if causal and q_len != k_len and q_len > 1:
        if q_len > k_len:
            raise ValueError(f"causal attention needs q_len <= k_len (got {q_len} queries, {k_len} keys): "
                             "with bottom-right alignment the first queries would see no key")
        mask = bottom_right_causal_mask(q_len, k_len, q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=softmax_scale, **extra)
    # One query against a prefix sees every key: bottom-right causal is then no mask at all.
    is_causal = causal and q_len == k_len
    return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=softmax_scale, **extra)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+D/2}) of x's last dim (size D) by its position's angle (RoPE, half-split layout).

    cos/sin broadcast against x; sin carries the signs (its first half negated), so rolling the halves
    [x1, x2] -> [x2, x1] gives [x1 cos - x2 sin, x2 cos + x1 sin] in one roll instead of chunk, negate, concat.
    """
    return (x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin).type_as(x)


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, keys: torch.Tensor,
                     values: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor,
                     softmax_scale: float | None = None) -> torch.Tensor:
    """New tokens through a (B, K, S, D) key/value cache: rotate the queries and keys of the (B, T, H + 2K, D)
    fused projection by cos/sin (B, T, D), write keys and values into the cache at ``slots`` (T,), and attend
    under the (B, T, S) boolean mask; returns (B, T, H, D). GQA."""
    kv_heads = keys.shape[1]
    rotated, v = qkv.split([qkv.shape[2] - kv_heads, kv_heads], dim=2)
    q, k = apply_rotary(rotated, cos[:, :, None], sin[:, :, None]).split([rotated.shape[2] - kv_heads, kv_heads],
                                                                          dim=2)
    keys.index_copy_(2, slots, k.transpose(1, 2).to(keys.dtype))
    values.index_copy_(2, slots, v.transpose(1, 2).to(values.dtype))
    q = q.transpose(1, 2)
    # Repeated heads rather than enable_gqa: SDPA's CUDA kernels do not all take enable_gqa with a mask.
    keys, values = repeat_kv_heads(q, keys, values)
    y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None], scale=softmax_scale)
    return y.transpose(1, 2)


def matvec(x: torch.Tensor, weight: torch.Tensor, gated: bool = False) -> torch.Tensor:
    """x @ weight.T for x holding one row; ``gated``: x is [gate, up] and the product is of silu(gate) * up.
    A bf16 row on a CPU goes through torch.mv: for the one-row products of batch-1 decoding, the bf16 matmul kernel
    reads weights at 4-10 GB/s here and the matrix-vector kernel at 12-15 GB/s."""
    if gated:
        x = swiglu(*x.chunk(2, dim=-1))
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return torch.mv(weight, x.reshape(-1)).view(*x.shape[:-1], weight.shape[0])
    return F.linear(x, weight)


def residual_norm_matvec(x: torch.Tensor, fx: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                         alpha: float = 1.0, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """h = RMSNorm(alpha * x + fx) * norm_weight and h @ weight.T, for one row."""
    h = residual_norm(x, fx, norm_weight, None, alpha, eps)
    return h, matvec(h, weight)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up."""
    return F.silu(gate) * up


def residual_norm(x: torch.Tensor, fx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  alpha: float = 1.0, eps: float = 1e-6, norm: str = "rms") -> torch.Tensor:
    """Norm(alpha * x + fx) over the last dim, in ``torch.result_type(x, fx)`` (DeepNorm's post-norm residual)."""
    # One kernel, promoting as it goes: an fp32 residual stream with a half fx (autocast) gives an fp32 h.
    h = torch.add(fx, x, alpha=alpha)
    # F.rms_norm runs its fused kernel only when weight has the input's dtype (otherwise it warns and decomposes
    # into a chain of upcasts, reductions and products), so fp32 norm weights meeting half activations are cast
    # to the activations' dtype: one row each, so the cast costs nothing, and autograd returns dweight in the
    # weight's own dtype, rounded once to the activations' precision.
    weight = weight.to(h.dtype)
    bias = None if bias is None else bias.to(h.dtype)
    if norm == "rms":
        y = F.rms_norm(h, (h.shape[-1],), weight, eps)
        if bias is not None:
            y = y + bias
    elif norm == "layer":
        y = F.layer_norm(h, (h.shape[-1],), weight, bias, eps)
    else:
        raise ValueError(f"residual_norm: norm={norm!r} is not one of 'rms', 'layer'")
    # Autocast may run the norm in fp32 even for a half h.
    return y.to(h.dtype)
