"""The batch-1 decoding kernels (one-row projections, plain and gated; one decoding step of attention: RoPE, the
cache write and attention over the cache) against float64
references, in the interpreter (test_gpu_compile.py compiles them for each GPU family), and traced by
torch.compile."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from genesis_kernels import reference
from genesis_kernels.kernels.decode_attention import decode_attention_triton
from genesis_kernels.kernels.matvec import matvec_triton, residual_norm_matvec_triton

# fp16 (the interpreter computes bf16 wrongly; these kernels load and store the dtype, multiply in fp32): the
# error is the output's rounding, ~1e-3 relative. fp32: summation order only.
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3}


def randn(*shape, dtype, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


# (rows, cols): one row; 1..64 rows a program, a partial last one (8200 rows); widths padded to a power of two
# (770); wider than one tile, so the loop and its partial last block run (5000)
MATVEC_SHAPES = [(1, 1), (7, 48), (768, 768), (1000, 770), (2304, 768), (768, 2048), (8200, 64), (130, 5000)]


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize(("rows", "cols"), MATVEC_SHAPES, ids=str)
def test_matvec_matches_float64_reference(rows, cols, dtype):
    x, weight = randn(1, 1, cols, dtype=dtype), randn(rows, cols, dtype=dtype, seed=1) / cols ** 0.5
    out = matvec_triton(x, weight)
    expected = reference.matvec(x, weight)
    assert out.shape == (1, 1, rows) and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])


def test_matvec_reads_a_strided_weight_and_refuses_batches():
    weight = randn(64, 96, dtype=torch.float32)[:, :48]  # row stride 96
    x = randn(48, dtype=torch.float32)
    torch.testing.assert_close(matvec_triton(x, weight).double(), reference.matvec(x, weight), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="more than one row"):
        matvec_triton(randn(2, 48, dtype=torch.float32), weight)
    with pytest.raises(ValueError, match="do not multiply"):
        matvec_triton(randn(47, dtype=torch.float32), weight)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (768, 2048), (130, 5000)], ids=str)
def test_gated_matvec_matches_float64_reference(rows, cols, dtype):
    gate_up, weight = randn(1, 2 * cols, dtype=dtype), randn(rows, cols, dtype=dtype, seed=1) / cols ** 0.5
    expected = reference.matvec(gate_up, weight, gated=True)
    out = matvec_triton(gate_up, weight, gated=True)
    assert out.shape == (1, rows) and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])
    with pytest.raises(ValueError, match=r"x \(\.\.\., 2K\)"):
        matvec_triton(gate_up[:, :cols], weight, gated=True)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize(("rows", "cols"), [(1, 2), (4096, 768), (130, 5000)], ids=str)
def test_residual_norm_matvec_matches_float64_reference(rows, cols, dtype):
    """h = RMSNorm(alpha * x + fx) * norm_weight (every program's, and the copy the first one writes) and h @ W^T;
    5000 columns take two column blocks in both passes."""
    x, fx = randn(1, 1, cols, dtype=dtype), randn(1, 1, cols, dtype=dtype, seed=1)
    norm_weight = 1 + 0.5 * randn(cols, dtype=dtype, seed=2)
    weight = randn(rows, cols, dtype=dtype, seed=3) / cols ** 0.5
    h, y = residual_norm_matvec_triton(x, fx, norm_weight, weight, alpha=2.5, eps=1e-6)
    h64, y64 = reference.residual_norm_matvec(x, fx, norm_weight, weight, alpha=2.5, eps=1e-6)
    assert h.shape == x.shape and y.shape == (1, 1, rows) and h.dtype == y.dtype == dtype
    torch.testing.assert_close(h.double(), h64, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])
    # y from the float64 h: the kernel's h is rounded to the dtype before its product, like the torch path's.
    torch.testing.assert_close(y.double(), y64, atol=4 * TOLERANCES[dtype], rtol=4 * TOLERANCES[dtype])
    with pytest.raises(ValueError, match="must be one row of K"):
        residual_norm_matvec_triton(x, fx, norm_weight[:-1], weight)


def rotary_angles(positions, half, theta=10000.0):
    """(B, 1, D/2) float64 angles position * theta^(-2i/D) of RoPE's pairs (x_i, x_{i + D/2})."""
    return positions.double()[:, None, None] * theta ** -(torch.arange(half, dtype=torch.float64) / half)


def rotary_tables(positions, head_dim):
    """The (B, 1, D) fp32 cos/sin the op takes: sin's first half negated (the model's RotaryEmbedding layout)."""
    angles = rotary_angles(positions, head_dim // 2)
    return torch.cat([angles.cos()] * 2, dim=-1).float(), torch.cat([-angles.sin(), angles.sin()], dim=-1).float()


# (batch, heads, kv heads, cache slots, slot written, head dim, left padding of the last row)
ATTENTION_CASES = [
    (1, 1, 1, 1, 0, 16, 0),  # the first token: one slot
    (2, 4, 4, 70, 65, 48, 10),  # head halves padded to 32; slots beyond the written one never read; a padded row
    (2, 4, 2, 200, 199, 64, 130),  # GQA; padding longer than two slot blocks (a fully masked first block)
    (1, 4, 1, 256, 128, 80, 0),  # multi-query; the filled slots end on a block boundary
    (2, 2, 2, 40, 5, 128, 6),  # the last row's query is itself padding: it sees only its own slot
]


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize(("batch", "heads", "kv_heads", "n_slots", "slot", "head_dim", "padding"), ATTENTION_CASES,
                         ids=str)
def test_decode_attention_matches_float64_reference(batch, heads, kv_heads, n_slots, slot, head_dim, padding,
                                                    dtype):
    qkv = randn(batch, 1, heads + 2 * kv_heads, head_dim, dtype=dtype)
    keys = randn(batch, kv_heads, n_slots, head_dim, dtype=dtype, seed=1)
    values = randn(batch, kv_heads, n_slots, head_dim, dtype=dtype, seed=2)
    # Slots from the written one on hold garbage that must never be read: NaN would poison the output if it were.
    keys[:, :, slot:], values[:, :, slot:] = float("nan"), float("nan")
    cached_keys, cached_values = keys.clone(), values.clone()
    # The KV cache's mask: a row sees its real slots up to the new one, and always the new one itself.
    pads = torch.tensor([0] * (batch - 1) + [padding])
    cache_slots = torch.arange(n_slots)
    mask = ((cache_slots[None, :] >= pads[:, None]) | (cache_slots == slot)) & (cache_slots <= slot)
    positions = (slot - pads).clamp(min=0)
    cos, sin = rotary_tables(positions, head_dim)

    out = decode_attention_triton(qkv, cos, sin, keys, values, mask[:, None], torch.tensor([slot]))

    # The cache holds the rotated new key and the new value at the slot, and is untouched elsewhere.
    expected_keys, expected_values = cached_keys.double(), cached_values.double()
    expected = reference.decode_attention(qkv, cos, sin, expected_keys, expected_values, mask[:, None],
                                          torch.tensor([slot]))
    torch.testing.assert_close(keys.double(), expected_keys, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype],
                               equal_nan=True)
    torch.testing.assert_close(values.double(), expected_values, equal_nan=True, atol=0, rtol=0)
    assert out.shape == (batch, 1, heads, head_dim) and out.dtype == dtype
    torch.testing.assert_close(out[:, 0].double(), expected[:, 0], atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])


def test_decode_attention_refuses_what_it_cannot_serve():
    qkv, cache = randn(1, 1, 8, 16, dtype=torch.float32), randn(1, 2, 8, 16, dtype=torch.float32)
    cos = sin = torch.ones(1, 1, 16)
    mask, slots = torch.ones(1, 1, 8, dtype=torch.bool), torch.tensor([3])
    with pytest.raises(ValueError, match="one new token per row"):
        decode_attention_triton(qkv.expand(1, 2, 8, 16), cos, sin, cache, cache, mask, slots)
    with pytest.raises(ValueError, match="mask must be bool"):
        decode_attention_triton(qkv, cos, sin, cache, cache, mask.float(), slots)
    with pytest.raises(ValueError, match="not H query heads"):
        decode_attention_triton(qkv[:, :, :7], cos, sin, cache, cache, mask, slots)
    with pytest.raises(ValueError, match="cos .* must be"):
        decode_attention_triton(qkv, cos[..., :8], sin, cache, cache, mask, slots)


def test_decoding_kernels_stay_inside_one_compiled_graph():
    """torch.compile(fullgraph=True) traces both ops as single nodes (triton_op), which is what lets a compiled
    decode step keep them in its CUDA graph. Traced only: without a GPU (and outside the interpreter, which
    torch.compile cannot trace) the kernels cannot run, so the recording backend never runs the graph."""
    script = textwrap.dedent("""
        import torch
        from genesis_kernels.kernels.decode_attention import decode_attention_triton
        from genesis_kernels.kernels.matvec import matvec_triton, residual_norm_matvec_triton

        def step(x, weight, qkv, rope, keys, values, mask, slot):
            return matvec_triton(x, weight) * 2, decode_attention_triton(qkv, rope, rope, keys, values, mask, slot + 1)

        graphs = []

        def record(graph_module, example_inputs):
            graphs.append(graph_module)
            return lambda *args: (None, None)

        args = (torch.randn(1, 1, 64), torch.randn(96, 64), torch.randn(1, 1, 8, 16), torch.randn(1, 1, 16),
                torch.randn(1, 2, 32, 16), torch.randn(1, 2, 32, 16), torch.ones(1, 1, 32, dtype=torch.bool),
                torch.tensor([9]))
        torch.compile(step, fullgraph=True, backend=record)(*args)
        ops = [str(node.target) for node in graphs[0].graph.nodes if node.op == "call_function"]
        print(len(graphs), ops)
    """)
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    count, ops = result.stdout.strip().split(" ", 1)
    assert count == "1"
    assert "genesis_kernels.matvec.default" in ops and "genesis_kernels.decode_attention.default" in ops
