"""flash_attention on both backends against a float64 reference; the Triton path runs in the interpreter."""

import pytest
import torch

import genesis_kernels
from genesis_kernels import BackendError, flash_attention
from genesis_kernels.memory import peak_memory
from genesis_kernels.reference import attention as reference_attention

BACKENDS = genesis_kernels.available_backends("cpu")

# (forward atol/rtol, gradient atol/rtol) per dtype, for O(1) inputs.
TOLERANCES = {
    torch.float32: ((1e-4, 1e-4), (1e-4, 1e-4)),
    torch.float16: ((3e-3, 3e-3), (1e-2, 1e-2)),
}

# batch, heads, kv_heads, q_len, k_len, head_dim, causal
CASES = [
    (1, 2, 2, 1, 1, 16, True),
    (2, 2, 2, 7, 7, 48, True),
    (1, 2, 2, 77, 77, 64, True),
    (1, 2, 2, 77, 77, 80, False),
    (1, 4, 2, 33, 33, 96, True),     # grouped-query attention
    (1, 4, 1, 40, 40, 128, False),   # one kv head
    (1, 2, 2, 1, 77, 32, True),      # one query against a KV prefix
    (2, 4, 2, 7, 77, 48, True),      # a query chunk against a longer prefix
    (1, 2, 2, 77, 33, 64, False),    # more queries than keys
]


def make_inputs(batch, heads, kv_heads, q_len, k_len, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_len, head_dim, generator=gen).to(dtype).requires_grad_()
    k = torch.randn(batch, kv_heads, k_len, head_dim, generator=gen).to(dtype).requires_grad_()
    v = torch.randn(batch, kv_heads, k_len, head_dim, generator=gen).to(dtype).requires_grad_()
    return q, k, v


def check_against_reference(q, k, v, causal, backend, softmax_scale=None):
    out = flash_attention(q, k, v, causal, softmax_scale, backend=backend)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    out.backward(grad_out)
    leaves = [t.detach().double().requires_grad_() for t in (q, k, v)]
    expected = reference_attention(*leaves, causal, softmax_scale)
    expected.backward(grad_out.double())
    (fwd_atol, fwd_rtol), (grad_atol, grad_rtol) = TOLERANCES[q.dtype]
    assert out.dtype == q.dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), expected, atol=fwd_atol, rtol=fwd_rtol)
    for name, tensor, leaf in zip("qkv", (q, k, v), leaves):
        torch.testing.assert_close(tensor.grad.double(), leaf.grad, atol=grad_atol, rtol=grad_rtol,
                                   msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "b{}h{}kv{}q{}k{}d{}{}".format(*c[:6], "c" if c[6] else ""))
def test_matches_float64_reference(case, dtype, backend):
    batch, heads, kv_heads, q_len, k_len, head_dim, causal = case
    q, k, v = make_inputs(batch, heads, kv_heads, q_len, k_len, head_dim, dtype)
    check_against_reference(q, k, v, causal, backend)


def test_triton_path_is_exercised():
    assert "triton" in BACKENDS, "the Triton interpreter should be on in tests (TRITON_INTERPRET=1)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_sequence_crosses_many_tiles(backend):
    q, k, v = make_inputs(1, 1, 1, 1000, 1000, 64, torch.float16)
    check_against_reference(q, k, v, True, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_inputs_and_custom_scale(backend):
    # (batch, seq, heads, dim) projections viewed as (batch, heads, seq, dim), as a model produces them.
    gen = torch.Generator().manual_seed(2)
    qkv = torch.randn(2, 33, 3, 4, 48, generator=gen)
    q, k, v = (qkv[:, :, i].transpose(1, 2).detach().requires_grad_() for i in range(3))
    assert not q.is_contiguous()
    check_against_reference(q, k, v, True, backend, softmax_scale=0.3)


def test_triton_path_does_not_call_sdpa(monkeypatch):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(*args, **kwargs):
        calls.append(1)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    q, k, v = make_inputs(1, 2, 2, 7, 7, 16, torch.float32)
    flash_attention(q, k, v, backend="torch")
    assert calls == [1]  # the patch is what the fallback calls
    flash_attention(q, k, v, backend="triton").sum().backward()
    assert calls == [1]


def test_backward_is_deterministic():
    q, k, v = make_inputs(1, 4, 2, 77, 77, 32, torch.float16)
    grads = []
    for _ in range(2):
        for t in (q, k, v):
            t.grad = None
        flash_attention(q, k, v, backend="triton").sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
    for first, second in zip(*grads):
        assert torch.equal(first, second)


def test_autocast_runs_in_lower_precision():
    q, k, v = make_inputs(1, 2, 2, 33, 33, 32, torch.float32)
    with torch.autocast("cpu", dtype=torch.float16):
        out = flash_attention(q, k, v, backend="triton")
    assert out.dtype == torch.float16
    out.float().sum().backward()
    assert q.grad.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference_attention(q, k, v, True), atol=3e-3, rtol=3e-3)


def test_forced_triton_refuses_what_it_cannot_serve():
    q, k, v = make_inputs(1, 2, 2, 7, 7, 16, torch.bfloat16)
    with pytest.raises(BackendError, match="bfloat16"):
        flash_attention(q, k, v, backend="triton")
    q, k, v = make_inputs(1, 2, 2, 7, 7, 256, torch.float32)
    with pytest.raises(BackendError, match="head_dim 256"):
        flash_attention(q, k, v, backend="triton")
    # auto serves both through the fallback
    assert flash_attention(q, k, v, backend="auto").shape == q.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_causal_with_more_queries_than_keys_is_an_error(backend):
    q, k, v = make_inputs(1, 2, 2, 9, 4, 16, torch.float32)
    with pytest.raises(ValueError, match="q_len <= k_len"):
        flash_attention(q, k, v, causal=True, backend=backend)


def naive_attention(q, k, v):
    """The score matrix in memory, in the inputs' dtype."""
    return reference_attention(q, k, v, True, dtype=None)


def _peak_extra_bytes(attention, seq_len):
    q, k, v = make_inputs(1, 1, 1, seq_len, seq_len, 16, torch.float32)
    with peak_memory("cpu", (q, k, v)) as peak:
        attention(q, k, v).sum().backward()
    return peak.bytes


def test_peak_memory_grows_linearly_not_quadratically():
    def triton_attention(q, k, v):
        return flash_attention(q, k, v, backend="triton")

    triton_growth = _peak_extra_bytes(triton_attention, 512) / _peak_extra_bytes(triton_attention, 256)
    naive_growth = _peak_extra_bytes(naive_attention, 512) / _peak_extra_bytes(naive_attention, 256)
    assert 1.8 < triton_growth < 2.2
    assert naive_growth > 3.5
    # and at 512 tokens the naive path already needs far more
    assert _peak_extra_bytes(naive_attention, 512) > 10 * _peak_extra_bytes(triton_attention, 512)


@pytest.mark.parametrize("q_shape,kv_shape,message", [
    ((1, 3, 7, 16), (1, 2, 7, 16), "3 query heads are not a multiple of 2 kv heads"),
    ((1, 2, 7, 16), (1, 2, 7, 32), "k and v must have one shape, with q's batch and head_dim"),
    ((2, 7, 16), (2, 7, 16), r"must be \(batch, heads, seq, head_dim\)"),
])
def test_triton_path_rejects_malformed_inputs(q_shape, kv_shape, message):
    with pytest.raises(ValueError, match=message):
        flash_attention(torch.randn(q_shape), torch.randn(kv_shape), torch.randn(kv_shape), backend="triton")


def test_short_query_chunks_get_short_tiles():
    from genesis_kernels.kernels.flash_attention import LAUNCH_CONFIGS, launch_configs

    forward, backward = launch_configs(torch.device("cpu"), 64, 1, torch.float32)
    assert forward.block_m == backward.block_m == 16
    assert launch_configs(torch.device("cpu"), 80, 500, torch.float32) == LAUNCH_CONFIGS["interpreter"][128]


def test_fp32_tiles_are_halved_on_gpus():
    # The table is sized for 2-byte elements; test_gpu_compile.py checks every family's configs fit its memory.
    from genesis_kernels.kernels.flash_attention import LAUNCH_CONFIGS, family_launch_configs

    half = family_launch_configs("sm_8x", 64, 4096, torch.bfloat16)
    single = family_launch_configs("sm_8x", 64, 4096, torch.float32)
    assert half == LAUNCH_CONFIGS["sm_8x"][64]
    assert [(c.block_m, c.block_n) for c in single] == [(c.block_m // 2, c.block_n // 2) for c in half]
