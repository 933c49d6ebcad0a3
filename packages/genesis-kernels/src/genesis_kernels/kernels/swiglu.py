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

# Each program takes a (rows x cols) tile of about TILE_ELEMENTS, so narrow widths still give programs enough
# work to hide memory latency.
MAX_BLOCK_COLS = 1024
TILE_ELEMENTS = 4096
NUM_WARPS = 4


@triton.jit
def swiglu_forward_kernel(GATE, UP, OUT, stride_gate, stride_up, stride_out, n_rows, n_cols,
                          BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    gate = tl.load(GATE + rows[:, None] * stride_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    up = tl.load(UP + rows[:, None] * stride_up + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(OUT + rows[:, None] * stride_out + cols[None, :], out.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def swiglu_backward_kernel(GRAD_OUT, GATE, UP, GRAD_GATE, GRAD_UP,
                           stride_grad_out, stride_gate, stride_up, stride_grad_in, n_rows, n_cols,
                           BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
    mask = (rows[:, None] < n_rows) & (cols[None, :] < n_cols)
    grad_out = tl.load(GRAD_OUT + rows[:, None] * stride_grad_out + cols[None, :], mask=mask, other=0.0)
    gate = tl.load(GATE + rows[:, None] * stride_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    up = tl.load(UP + rows[:, None] * stride_up + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    grad_out = grad_out.to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    # d silu(g) / dg = sig * (1 + g * (1 - sig))
    grad_gate = grad_out * up * sig * (1.0 + gate * (1.0 - sig))
    offsets = rows[:, None] * stride_grad_in + cols[None, :]
    tl.store(GRAD_GATE + offsets, grad_gate.to(GRAD_GATE.dtype.element_ty), mask=mask)
    tl.store(GRAD_UP + offsets, (grad_out * silu).to(GRAD_UP.dtype.element_ty), mask=mask)


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` as (rows, last dim) with unit column stride: a view when the leading dims allow one."""
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 or rows.shape[-1] == 1 else rows.contiguous()


def _launch(n_rows: int, n_cols: int) -> tuple[tuple[int, int], dict]:
    block_cols = min(MAX_BLOCK_COLS, triton.next_power_of_2(n_cols))
    block_rows = max(1, TILE_ELEMENTS // block_cols)
    grid = (triton.cdiv(n_rows, block_rows), triton.cdiv(n_cols, block_cols))
    return grid, dict(BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols, num_warps=NUM_WARPS)


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        gate_rows, up_rows = as_rows(gate), as_rows(up)
        out = torch.empty(gate.shape, dtype=gate.dtype, device=gate.device)
        n_rows, n_cols = gate_rows.shape
        if out.numel():
            grid, meta = _launch(n_rows, n_cols)
            swiglu_forward_kernel[grid](gate_rows, up_rows, out, gate_rows.stride(0), up_rows.stride(0), n_cols,
                                        n_rows, n_cols, **meta)
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
            grid, meta = _launch(n_rows, n_cols)
            swiglu_backward_kernel[grid](grad_rows, gate_rows, up_rows, grad_gate, grad_up, grad_rows.stride(0),
                                         gate_rows.stride(0), up_rows.stride(0), n_cols, n_rows, n_cols, **meta)
        return grad_gate, grad_up


def swiglu_triton(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The Triton path of :func:`genesis_kernels.swiglu` (same arguments, no dispatch)."""
    if gate.shape != up.shape:
        raise ValueError(f"swiglu: gate {tuple(gate.shape)} and up {tuple(up.shape)} must have one shape")
    if gate.dtype != up.dtype:
        raise ValueError(f"swiglu: gate and up dtypes differ ({gate.dtype}, {up.dtype})")
    return SwiGLUFunction.apply(gate, up)
