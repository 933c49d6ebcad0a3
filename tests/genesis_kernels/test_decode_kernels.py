"""The batch-1 decoding kernels (one-row projections, one-query attention over a KV cache) against float64
references, in the interpreter (test_gpu_compile.py compiles them for each GPU family), and traced by
torch.compile."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from genesis_kernels.kernels.decode_attention import decode_attention_triton
from genesis_kernels.kernels.matvec import matvec_triton

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
    expected = x.double() @ weight.double().T
    assert out.shape == (1, 1, rows) and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])


def test_matvec_reads_a_strided_weight_and_refuses_batches():
    weight = randn(64, 96, dtype=torch.float32)[:, :48]  # row stride 96
    x = randn(48, dtype=torch.float32)
    torch.testing.assert_close(matvec_triton(x, weight).double(), weight.double() @ x.double(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="more than one row"):
        matvec_triton(randn(2, 48, dtype=torch.float32), weight)
    with pytest.raises(ValueError, match="do not multiply"):
        matvec_triton(randn(47, dtype=torch.float32), weight)


def reference_decode_attention(q, keys, values, mask, filled):
    groups = q.shape[1] // keys.shape[1]
    keys, values = keys.double().repeat_interleave(groups, 1), values.double().repeat_interleave(groups, 1)
    scores = q.double() @ keys.transpose(-1, -2) * q.shape[-1] ** -0.5  # (B, H, 1, S)
    seen = mask.clone()
    seen[:, filled:] = False
    return scores.masked_fill(~seen[:, None, None, :], float("-inf")).softmax(-1) @ values


# (batch, heads, kv heads, slots, filled, head dim, left padding of row 1)
ATTENTION_CASES = [
    (1, 1, 1, 1, 1, 16, 0),  # the first token: one slot
    (2, 4, 4, 70, 66, 48, 10),  # head dim padded to 64; slots beyond `filled` never read; a padded row
    (2, 4, 2, 200, 200, 64, 130),  # GQA; padding longer than two slot blocks (a fully masked first block)
    (1, 4, 1, 256, 129, 80, 0),  # multi-query; filled crosses a block by one
    (1, 2, 2, 64, 300, 128, 0),  # a count beyond the cache is clamped to its slots
]


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize(("batch", "heads", "kv_heads", "slots", "filled", "head_dim", "padding"), ATTENTION_CASES,
                         ids=str)
def test_decode_attention_matches_float64_reference(batch, heads, kv_heads, slots, filled, head_dim, padding,
                                                    dtype):
    q = randn(batch, heads, 1, head_dim, dtype=dtype)
    keys = randn(batch, kv_heads, slots, head_dim, dtype=dtype, seed=1)
    values = randn(batch, kv_heads, slots, head_dim, dtype=dtype, seed=2)
    # Unfilled slots hold garbage that must never be read: NaN would poison the output if it were.
    keys[:, :, filled:], values[:, :, filled:] = float("nan"), float("nan")
    mask = torch.ones(batch, slots, dtype=torch.bool)
    mask[batch - 1, :padding] = False
    out = decode_attention_triton(q, keys, values, mask, torch.tensor(filled))
    expected = reference_decode_attention(q, keys.nan_to_num(), values.nan_to_num(), mask, min(filled, slots))
    assert out.shape == q.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=TOLERANCES[dtype], rtol=TOLERANCES[dtype])


def test_decode_attention_refuses_what_it_cannot_serve():
    q, cache = randn(1, 4, 2, 16, dtype=torch.float32), randn(1, 2, 8, 16, dtype=torch.float32)
    mask, filled = torch.ones(1, 8, dtype=torch.bool), torch.tensor(3)
    with pytest.raises(ValueError, match="one query per row"):
        decode_attention_triton(q, cache, cache, mask, filled)
    with pytest.raises(ValueError, match="mask must be bool"):
        decode_attention_triton(q[:, :, :1], cache, cache, mask.float(), filled)
    with pytest.raises(ValueError, match="not a multiple"):
        decode_attention_triton(randn(1, 3, 1, 16, dtype=torch.float32), cache, cache, mask, filled)


def test_decoding_kernels_stay_inside_one_compiled_graph():
    """torch.compile(fullgraph=True) traces both ops as single nodes (triton_op), which is what lets a compiled
    decode step keep them in its CUDA graph. Traced only: without a GPU (and outside the interpreter, which
    torch.compile cannot trace) the kernels cannot run, so the recording backend never runs the graph."""
    script = textwrap.dedent("""
        import torch
        from genesis_kernels.kernels.decode_attention import decode_attention_triton
        from genesis_kernels.kernels.matvec import matvec_triton

        def step(x, weight, q, keys, values, mask, length):
            return matvec_triton(x, weight) * 2, decode_attention_triton(q, keys, values, mask, length + 1)

        graphs = []

        def record(graph_module, example_inputs):
            graphs.append(graph_module)
            return lambda *args: (None, None)

        args = (torch.randn(1, 1, 64), torch.randn(96, 64), torch.randn(1, 4, 1, 16), torch.randn(1, 2, 32, 16),
                torch.randn(1, 2, 32, 16), torch.ones(1, 32, dtype=torch.bool), torch.tensor(9))
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
