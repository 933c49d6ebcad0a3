"""Fused SwiGLU, silu(gate) * up, in Triton.

The forward reads gate and up once and writes the product; the backward recomputes the sigmoid from the
saved inputs instead of keeping the activation, so only gate and up stay alive between the two passes.
Inputs are seen as (rows, cols) with any row stride, so the two halves of one fused gate/up projection
(``proj(x).chunk(2, dim=-1)``) are read in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_COLS = 1024
NUM_WARPS = 4


@triton.jit
def swiglu_forward_kernel(GATE, UP, OUT, stride_gate, stride_up, stride_out, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(GATE + row * stride_gate + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(UP + row * stride_up + cols, mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(OUT + row * stride_out + cols, out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_backward_kernel(GRAD_OUT, GATE, UP, GRAD_GATE, GRAD_UP,
                           stride_grad_out, stride_gate, stride_up, stride_grad_in, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    grad_out = tl.load(GRAD_OUT + row * stride_grad_out + cols, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(GATE + row * stride_gate + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(UP + row * stride_up + cols, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    # d silu(g) / dg = sig * (1 + g * (1 - sig))
    grad_gate = grad_out * up * sig * (1.0 + gate * (1.0 - sig))
    tl.store(GRAD_GATE + row * stride_grad_in + cols, grad_gate.to(GRAD_GATE.dtype.element_ty), mask=mask)
    tl.store(GRAD_UP + row * stride_grad_in + cols, (grad_out * silu).to(GRAD_UP.dtype.element_ty), mask=mask)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, last dim) with unit column stride: a view when the leading dims allow one."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 or rows.shape[-1] == 1 else rows.contiguous()


def _grid(n_rows: int, n_cols: int) -> tuple[int, int]:
    return n_rows, triton.cdiv(n_cols, BLOCK_COLS)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate_rows, up_rows = as_rows(gate), as_rows(up)
        out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
        n_rows, n_cols = gate_rows.shape
        if out.numel():
            swiglu_forward_kernel[_grid(n_rows, n_cols)](
                gate_rows, up_rows, out, gate_rows.stride(0), up_rows.stride(0), n_cols, n_cols,
                BLOCK=BLOCK_COLS, num_warps=NUM_WARPS)
        ctx.save_for_backward(gate, up)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        gate, up = ctx.saved_tensors
        gate_rows, up_rows, grad_rows = as_rows(gate), as_rows(up), as_rows(grad_out)
        grad_gate = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
        grad_up = torch.empty_like(grad_gate)
        n_rows, n_cols = gate_rows.shape
        if grad_gate.numel():
            swiglu_backward_kernel[_grid(n_rows, n_cols)](
                grad_rows, gate_rows, up_rows, grad_gate, grad_up,
                grad_rows.stride(0), gate_rows.stride(0), up_rows.stride(0), n_cols, n_cols,
                BLOCK=BLOCK_COLS, num_warps=NUM_WARPS)
        return grad_gate, grad_up


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The Triton path of :func:`genesis_kernels.swiglu` (same arguments, no dispatch)."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
    if gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate and up dtypes differ ({gate.dtype}, {up.dtype})")
    return SwiGLUFunction.apply(gate, up)
