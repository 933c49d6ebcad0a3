"""swiglu on both backends against a float64 reference; the Triton path runs in the interpreter."""

import pytest
import torch

import genesis_kernels
from genesis_kernels import swiglu
from genesis_kernels.kernels.swiglu import as_rows
from genesis_kernels.reference import swiglu as reference_swiglu

BACKENDS = genesis_kernels.available_backends("cpu")

# atol/rtol per dtype, forward and gradients (the interpreter casts to bfloat16 by truncation).
TOLERANCES = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}

# 1500 crosses a 1024-wide column block; 300 rows of 16 cross a 256-row tile
SHAPES = [(1,), (7,), (2, 7, 48), (3, 77), (2, 1500), (300, 16)]


def check_fused_projection(shape, dtype, backend):
    # The model's call: the two halves of one gate/up projection, strided views of one tensor.
    gen = torch.Generator().manual_seed(0)
    proj = torch.randn(*shape[:-1], 2 * shape[-1], generator=gen).to(dtype).requires_grad_()
    gate, up = proj.chunk(2, dim=-1)
    out = swiglu(gate, up, backend=backend)
    grad_out = torch.randn(out.shape, generator=gen).to(dtype)
    out.backward(grad_out)

    proj64 = proj.detach().double().requires_grad_()
    expected = reference_swiglu(*proj64.chunk(2, dim=-1))
    expected.backward(grad_out.double())
    tol = TOLERANCES[dtype]
    assert out.shape == gate.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), expected, atol=tol, rtol=tol)
    torch.testing.assert_close(proj.grad.double(), proj64.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(shape, dtype, backend):
    check_fused_projection(shape, dtype, backend)


def test_strided_halves_are_read_in_place():
    proj = torch.randn(2, 7, 96)
    gate, up = proj.chunk(2, dim=-1)
    assert as_rows(gate).data_ptr() == gate.data_ptr() and as_rows(gate).stride() == (96, 1)
    assert as_rows(up).data_ptr() == up.data_ptr()


def test_triton_backward_keeps_only_the_inputs():
    proj = torch.randn(3, 64, requires_grad=True)
    gate, up = proj.chunk(2, dim=-1)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = swiglu(gate, up, backend="triton")
    assert [t.data_ptr() for t in saved] == [gate.data_ptr(), up.data_ptr()]
    out.sum().backward()
    assert proj.grad is not None


def test_triton_path_rejects_mismatched_inputs():
    with pytest.raises(genesis_kernels.BackendError, match="differ"):
        swiglu(torch.randn(4, 8), torch.randn(1, 8), backend="triton")
    # the fallback broadcasts
    assert swiglu(torch.randn(4, 8), torch.randn(1, 8), backend="auto").shape == (4, 8)
