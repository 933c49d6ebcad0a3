"""residual_norm on both backends against a float64 reference; the Triton path runs in the interpreter."""

import pytest
import torch

import genesis_kernels
from genesis_kernels import residual_norm

BACKENDS = genesis_kernels.available_backends("cpu")

# atol/rtol per dtype, forward and gradients, for O(1) activations.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}

SHAPES = [(1, 1), (7, 48), (2, 7, 77), (3, 768), (300, 16)]  # 300 rows: several row tiles and programs


def reference_residual_norm(x, fx, weight, bias, alpha, eps, norm):
    h = alpha * x.double() + fx.double()
    if norm == "layer":
        h = h - h.mean(-1, keepdim=True)
    y = h / torch.sqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.double()
    return y + bias.double() if bias is not None else y


def check(shape, dtype, norm, with_bias, alpha, backend, weight_dtype=None):
    gen = torch.Generator().manual_seed(0)
    width = shape[-1]
    x = torch.randn(shape, generator=gen).to(dtype).requires_grad_()
    fx = torch.randn(shape, generator=gen).to(dtype).requires_grad_()
    weight = (1 + 0.5 * torch.randn(width, generator=gen)).to(weight_dtype or dtype).requires_grad_()
    bias = (0.5 * torch.randn(width, generator=gen)).to(weight_dtype or dtype).requires_grad_() if with_bias else None
    out = residual_norm(x, fx, weight, bias, alpha=alpha, norm=norm, backend=backend)
    grad_out = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(grad_out)

    inputs = [t for t in (x, fx, weight, bias) if t is not None]
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    expected = reference_residual_norm(leaves[0], leaves[1], leaves[2], leaves[3] if with_bias else None,
                                       alpha, 1e-6, norm)
    expected.backward(grad_out.double())
    tol = TOLERANCES[dtype]
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    for name, tensor, leaf in zip(("x", "fx", "weight", "bias"), inputs, leaves):
        # weight and bias gradients sum over rows; scale the tolerance with their magnitude
        scale = max(1.0, leaf.grad.abs().max().item()) if name in ("weight", "bias") else 1.0
        torch.testing.assert_close(tensor.grad.double(), leaf.grad, atol=tol * scale, rtol=tol,
                                   msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm,with_bias", [("rms", False), ("rms", True), ("layer", True)])
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(shape, dtype, norm, with_bias, backend):
    check(shape, dtype, norm, with_bias, alpha=1.7, backend=backend)


# PyTorch warns that F.rms_norm cannot use its fused kernel for mixed dtypes; the result is still checked.
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_weights_with_half_activations(backend):
    check((2, 7, 48), torch.float16, "rms", True, alpha=2.0, backend=backend, weight_dtype=torch.float32)


def test_weight_gradient_is_deterministic():
    x, fx = torch.randn(37, 64), torch.randn(37, 64)
    weight = torch.randn(64, requires_grad=True)
    grads = []
    for _ in range(2):
        weight.grad = None
        residual_norm(x, fx, weight, alpha=3.0, backend="triton").square().sum().backward()
        grads.append(weight.grad.clone())
    assert torch.equal(*grads)


def test_strided_activations_are_read_in_place():
    # fx as a slice of a wider buffer: rows with a stride, no copy needed
    wide = torch.randn(2, 7, 96)
    x, fx = wide[..., :48], wide[..., 48:]
    weight = torch.ones(48)
    out = residual_norm(x, fx, weight, backend="triton")
    torch.testing.assert_close(out.double(), reference_residual_norm(x, fx, weight, None, 1.0, 1e-6, "rms"),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_norm_is_an_error(backend):
    with pytest.raises(ValueError, match="norm='batch'"):
        residual_norm(torch.randn(2, 8), torch.randn(2, 8), torch.ones(8), norm="batch", backend=backend)
