"""The torch fallback: the same call as SDPA / eager ops, bottom-right causal, autocast, torch.compile."""

import pytest
import torch
import torch.nn.functional as F

from genesis_kernels import fallback, flash_attention, reference, residual_norm, swiglu


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv("GENESIS_KERNELS_BACKEND", "torch")


def test_same_length_attention_is_exactly_sdpa():
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    for causal in (True, False):
        assert torch.equal(flash_attention(q, k, v, causal),
                           F.scaled_dot_product_attention(q, k, v, is_causal=causal))


def test_bottom_right_mask():
    expected = torch.tensor([[1, 1, 1, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(fallback.bottom_right_causal_mask(3, 5), expected)


def test_query_chunk_matches_the_tail_of_full_attention():
    # Queries appended to a KV prefix see what the last queries of full causal attention see.
    q, k, v = torch.randn(3, 1, 2, 12, 16, dtype=torch.float64).unbind(0)
    full = flash_attention(q, k, v, causal=True)
    for q_len in (1, 5):
        torch.testing.assert_close(flash_attention(q[:, :, -q_len:], k, v, causal=True), full[:, :, -q_len:])


def test_grouped_query_attention_matches_repeated_heads():
    q = torch.randn(1, 6, 7, 16, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, 7, 16, dtype=torch.float64).unbind(0)
    torch.testing.assert_close(flash_attention(q, k, v),
                               flash_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)))


def test_naive_attention_matches_sdpa():
    q = torch.randn(1, 4, 5, 16, dtype=torch.float64)
    k, v = torch.randn(2, 1, 2, 9, 16, dtype=torch.float64).unbind(0)  # GQA, a query chunk after a prefix
    torch.testing.assert_close(reference.attention(q, k, v, causal=True),
                               fallback.attention(q, k, v, causal=True))


def test_autocast():
    q, k, v = torch.randn(3, 1, 2, 9, 16).unbind(0)
    weight = torch.ones(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = flash_attention(q, k, v)
        mixed = residual_norm(out, out, weight)
    assert out.dtype == torch.bfloat16
    assert mixed.dtype == torch.bfloat16


def test_torch_compile_fullgraph_forward_and_backward():
    def block(x, weight, bias):
        batch, seq, width = x.shape
        q = x.view(batch, seq, 2, width // 2).transpose(1, 2)
        attn = flash_attention(q, q, q).transpose(1, 2).reshape(batch, seq, width)
        h = residual_norm(x, attn, weight, bias, alpha=2.0, norm="layer")
        gate, up = torch.cat([h, h], dim=-1).chunk(2, dim=-1)
        # half activations with the fp32 weight: the dtype mix must trace whole too
        return residual_norm(h.half(), swiglu(gate, up).half(), weight, alpha=2.0)

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    x = torch.randn(2, 5, 32, requires_grad=True)
    weight, bias = torch.ones(32, requires_grad=True), torch.zeros(32, requires_grad=True)
    compiled(x, weight, bias).sum().backward()
    compiled_grad = x.grad.clone()
    x.grad = None
    block(x, weight, bias).sum().backward()
    torch.testing.assert_close(compiled_grad, x.grad)
