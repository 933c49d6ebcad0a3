"""residual_norm on both backends against a float64 reference; the Triton path runs in the interpreter."""

import pytest
import torch

import genesis_kernels
from genesis_kernels import residual_norm
from genesis_kernels.reference import residual_norm as reference_residual_norm

BACKENDS = genesis_kernels.available_backends("cpu")

# atol/rtol per dtype, forward and gradients, for O(1) activations.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}

SHAPES = [(1, 1), (7, 48), (2, 7, 77), (3, 768), (300, 16)]  # 300 rows: several row tiles and programs
NORMS = [("rms", False), ("rms", True), ("layer", True)]

# (x, fx, weight and bias) dtypes that differ, fp16 standing in for every half type (the interpreter computes
# bf16 arithmetic wrongly). The first is autocast training: an fp32 residual stream, fx from half matmuls, fp32
# norm weights. The second is a half model that keeps its norm weights in fp32.
MIXED_DTYPES = [(torch.float32, torch.float16, torch.float32), (torch.float16, torch.float16, torch.float32)]


def tolerance(dtype, x, fx):
    """A tensor is as exact as its own dtype and as h = alpha * x + fx, which every output and gradient goes
    through (the torch backend rounds h, and the norm on it, to torch.result_type(x, fx))."""
    return max(TOLERANCES[dtype], TOLERANCES[torch.result_type(x, fx)])


def check(shape, dtype, norm, with_bias, alpha, backend, fx_dtype=None, weight_dtype=None):
    """residual_norm and its gradients against float64, with x in ``dtype`` and fx, weight and bias in theirs
    (default: ``dtype``)."""
    gen = torch.Generator().manual_seed(0)
    width = shape[-1]
    x = torch.randn(shape, generator=gen).to(dtype).requires_grad_()
    fx = torch.randn(shape, generator=gen).to(fx_dtype or dtype).requires_grad_()
    weight = (1 + 0.5 * torch.randn(width, generator=gen)).to(weight_dtype or dtype).requires_grad_()
    bias = (0.5 * torch.randn(width, generator=gen)).to(weight_dtype or dtype).requires_grad_() if with_bias else None
    out = residual_norm(x, fx, weight, bias, alpha=alpha, norm=norm, backend=backend)
    grad_out = torch.randn(out.shape, generator=gen).to(out.dtype)
    out.backward(grad_out)

    inputs = [t for t in (x, fx, weight, bias) if t is not None]
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    expected = reference_residual_norm(leaves[0], leaves[1], leaves[2], leaves[3] if with_bias else None,
                                       alpha, 1e-6, norm)
    expected.backward(grad_out.double())
    assert out.shape == x.shape and out.dtype == torch.result_type(x, fx)
    tol = tolerance(out.dtype, x, fx)
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    for name, tensor, leaf in zip(("x", "fx", "weight", "bias"), inputs, leaves):
        assert tensor.grad.dtype == tensor.dtype, f"d{name} is {tensor.grad.dtype}, {name} is {tensor.dtype}"
        # weight and bias gradients sum over rows; scale the tolerance with their magnitude
        scale = max(1.0, leaf.grad.abs().max().item()) if name in ("weight", "bias") else 1.0
        tol = tolerance(tensor.dtype, x, fx)
        torch.testing.assert_close(tensor.grad.double(), leaf.grad, atol=tol * scale, rtol=tol,
                                   msg=lambda m, name=name: f"d{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm,with_bias", NORMS)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(shape, dtype, norm, with_bias, backend):
    check(shape, dtype, norm, with_bias, alpha=1.7, backend=backend)


@pytest.fixture
def warn_every_time():
    """PyTorch warns once per process by default; make each call warn, so a test can fail on its warnings."""
    before = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    yield
    torch.set_warn_always(before)


# The torch backend must not fall off F.rms_norm's fused path for fp32 weights ("Mismatch dtype" warning).
@pytest.mark.usefixtures("warn_every_time")
@pytest.mark.filterwarnings("error:Mismatch dtype:UserWarning")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm,with_bias", NORMS)
@pytest.mark.parametrize("dtypes", MIXED_DTYPES, ids=lambda d: "x={}-fx={}-w={}".format(*map(str, d)))
@pytest.mark.parametrize("shape", [(2, 7, 48), (300, 16)], ids=str)
def test_mixed_dtypes_match_float64_reference(shape, dtypes, norm, with_bias, backend):
    x_dtype, fx_dtype, weight_dtype = dtypes
    check(shape, x_dtype, norm, with_bias, alpha=2.0, backend=backend, fx_dtype=fx_dtype, weight_dtype=weight_dtype)


def test_autocast_training_step_runs_the_kernel(monkeypatch):
    """Under autocast the sublayer output is half while the residual stream and the norm weight stay fp32:
    auto serves that mix with the Triton kernel, which returns fp32 and each gradient in its input's dtype."""
    def fallback_must_not_run(*args, **kwargs):
        raise AssertionError("the torch fallback served an autocast call")

    monkeypatch.setattr(genesis_kernels.fallback, "residual_norm", fallback_must_not_run)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 7, 48, generator=gen, requires_grad=True)
    sublayer = torch.nn.Linear(48, 48)
    weight = (1 + 0.5 * torch.randn(48, generator=gen)).requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        fx = sublayer(x)
        fx.retain_grad()
        out = residual_norm(x, fx, weight, alpha=2.0, backend="auto")
    assert fx.dtype == torch.float16 and out.dtype == torch.float32
    out.pow(2).sum().backward()
    # x also feeds the Linear, so its gradient is checked for dtype here and for value in the grids above.
    assert (x.grad.dtype, fx.grad.dtype, weight.grad.dtype) == (torch.float32, torch.float16, torch.float32)

    x64, fx64, weight64 = (t.detach().double().requires_grad_() for t in (x, fx, weight))
    expected = reference_residual_norm(x64, fx64, weight64, None, 2.0, 1e-6, "rms")
    expected.pow(2).sum().backward()
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fx.grad.double(), fx64.grad, atol=5e-3, rtol=5e-3)  # rounded to fp16
    weight_scale = weight64.grad.abs().max().item()  # a sum over the 14 rows
    torch.testing.assert_close(weight.grad.double(), weight64.grad, atol=1e-4 * weight_scale, rtol=1e-4)


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
