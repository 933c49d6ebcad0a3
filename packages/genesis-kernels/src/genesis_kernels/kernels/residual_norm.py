"""Fused DeepNorm residual, y = Norm(alpha * x + fx) (RMSNorm or LayerNorm), in Triton.

Forward: one program per row computes h = alpha * x + fx in fp32, normalizes it and stores y plus the row's
inverse std (and mean for LayerNorm); h itself is never written. Backward: each program walks a contiguous
run of rows, recomputes h from the saved x and fx (which the caller keeps alive anyway), writes dx and dfx,
and accumulates its share of dweight/dbias in fp32; the per-program partial sums are added in PyTorch, in a
fixed order, so the result is deterministic. A whole row lives in registers, so widths up to
``genesis_kernels.dispatch.MAX_NORM_WIDTH`` are served.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .swiglu import as_rows

# Interpreter programs run one after another: a few long ones beat many short ones there.
INTERPRETER_BACKWARD_PROGRAMS = 4


@triton.jit
def residual_norm_forward_kernel(
    X, FX, W, B, Y, RSTD, MEAN,
    stride_x, stride_fx, stride_y, n_cols, alpha, eps,
    LAYER_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    fx = tl.load(FX + row * stride_fx + cols, mask=mask, other=0.0).to(tl.float32)
    h = alpha * x + fx
    if LAYER_NORM:
        mean = tl.sum(h, 0) / n_cols
        centered = tl.where(mask, h - mean, 0.0)
        rstd = tl.rsqrt(tl.sum(centered * centered, 0) / n_cols + eps)
        normed = centered * rstd
        tl.store(MEAN + row, mean)
    else:
        rstd = tl.rsqrt(tl.sum(h * h, 0) / n_cols + eps)
        normed = h * rstd
    y = normed * tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y += tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def residual_norm_backward_kernel(
    GRAD_Y, X, FX, W, RSTD, MEAN, GRAD_X, GRAD_FX, GRAD_W_PARTIAL, GRAD_B_PARTIAL,
    stride_grad_y, stride_x, stride_fx, stride_grad_in, n_rows, n_cols, rows_per_program, alpha,
    LAYER_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):
    program = tl.program_id(0)
    # int64 rows so that row * stride cannot overflow on large activations.
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    grad_w = tl.zeros([BLOCK], dtype=tl.float32)
    grad_b = tl.zeros([BLOCK], dtype=tl.float32)
    row_start = program.to(tl.int64) * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    for row in range(row_start, row_end):
        grad_y = tl.load(GRAD_Y + row * stride_grad_y + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        fx = tl.load(FX + row * stride_fx + cols, mask=mask, other=0.0).to(tl.float32)
        h = alpha * x + fx
        rstd = tl.load(RSTD + row)
        if LAYER_NORM:
            normed = tl.where(mask, (h - tl.load(MEAN + row)) * rstd, 0.0)
        else:
            normed = h * rstd
        grad_normed = grad_y * w
        grad_w += grad_y * normed
        if HAS_BIAS:
            grad_b += grad_y
        # d/dh of normed: rstd * (g - mean(g * normed) * normed), LayerNorm also subtracting mean(g).
        projection = tl.sum(grad_normed * normed, 0) / n_cols
        if LAYER_NORM:
            grad_h = rstd * (grad_normed - tl.sum(grad_normed, 0) / n_cols - normed * projection)
        else:
            grad_h = rstd * (grad_normed - normed * projection)
        tl.store(GRAD_FX + row * stride_grad_in + cols, grad_h.to(GRAD_FX.dtype.element_ty), mask=mask)
        tl.store(GRAD_X + row * stride_grad_in + cols, (alpha * grad_h).to(GRAD_X.dtype.element_ty), mask=mask)
    tl.store(GRAD_W_PARTIAL + program * n_cols + cols, grad_w, mask=mask)
    if HAS_BIAS:
        tl.store(GRAD_B_PARTIAL + program * n_cols + cols, grad_b, mask=mask)


def _num_warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 4096 else 16


@functools.cache
def _backward_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return INTERPRETER_BACKWARD_PROGRAMS


class ResidualNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fx, weight, bias, alpha, eps, layer_norm):
        x_rows, fx_rows = as_rows(x), as_rows(fx)
        n_rows, n_cols = x_rows.shape
        block = triton.next_power_of_2(n_cols)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        mean = torch.empty(n_rows if layer_norm else 0, dtype=torch.float32, device=x.device)
        if n_rows:
            residual_norm_forward_kernel[(n_rows,)](
                x_rows, fx_rows, weight, bias if bias is not None else weight, y, rstd, mean,
                x_rows.stride(0), fx_rows.stride(0), n_cols, n_cols, alpha, eps,
                LAYER_NORM=layer_norm, HAS_BIAS=bias is not None, BLOCK=block, num_warps=_num_warps(block))
        ctx.save_for_backward(x, fx, weight, rstd, mean)
        ctx.has_bias, ctx.alpha, ctx.layer_norm = bias is not None, alpha, layer_norm
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, fx, weight, rstd, mean = ctx.saved_tensors
        x_rows, fx_rows, grad_rows = as_rows(x), as_rows(fx), as_rows(grad_y)
        n_rows, n_cols = x_rows.shape
        block = triton.next_power_of_2(n_cols)
        programs = max(1, min(n_rows, _backward_programs(x.device)))
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        grad_fx = torch.empty_like(grad_x)
        grad_w_partial = torch.zeros((programs, n_cols), dtype=torch.float32, device=x.device)
        grad_b_partial = torch.zeros((programs if ctx.has_bias else 0, n_cols), dtype=torch.float32,
                                     device=x.device)
        if n_rows:
            residual_norm_backward_kernel[(programs,)](
                grad_rows, x_rows, fx_rows, weight, rstd, mean, grad_x, grad_fx, grad_w_partial, grad_b_partial,
                grad_rows.stride(0), x_rows.stride(0), fx_rows.stride(0), n_cols, n_rows, n_cols,
                triton.cdiv(n_rows, programs), ctx.alpha,
                LAYER_NORM=ctx.layer_norm, HAS_BIAS=ctx.has_bias, BLOCK=block, num_warps=_num_warps(block))
        grad_weight = grad_w_partial.sum(0).to(weight.dtype)
        grad_bias = grad_b_partial.sum(0).to(ctx.bias_dtype) if ctx.has_bias else None
        return grad_x, grad_fx, grad_weight, grad_bias, None, None, None


def residual_norm_triton(x: torch.Tensor, fx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         alpha: float = 1.0, eps: float = 1e-6, norm: str = "rms") -> torch.Tensor:
    """The Triton path of :func:`genesis_kernels.residual_norm` (same arguments, no dispatch)."""
    if norm not in ("rms", "layer"):
        raise ValueError(f"residual_norm: norm={norm!r} is not one of 'rms', 'layer'")
    if x.shape != fx.shape or x.dtype != fx.dtype:
        raise ValueError(f"residual_norm: x {tuple(x.shape)} {x.dtype} and fx {tuple(fx.shape)} {fx.dtype} "
                         "must have one shape and dtype")
    width = x.shape[-1]
    if weight.shape != (width,) or (bias is not None and bias.shape != (width,)):
        raise ValueError(f"residual_norm: weight and bias must have shape ({width},), got "
                         f"{tuple(weight.shape)} and {None if bias is None else tuple(bias.shape)}")
    return ResidualNormFunction.apply(x, fx, weight.contiguous(), None if bias is None else bias.contiguous(),
                                      float(alpha), float(eps), norm == "layer")
