"""Fused DeepNorm residual, y = Norm(alpha * x + fx) (RMSNorm or LayerNorm), in Triton.

Forward: each program takes a tile of whole rows, computes h = alpha * x + fx in fp32, normalizes it and
stores y plus each row's inverse std (and mean for LayerNorm); h itself is never written. Backward: each
program walks a contiguous run of row tiles, recomputes h from the saved x and fx (which the caller keeps alive
anyway), writes dx and dfx, and accumulates its share of dweight/dbias in fp32; the per-program partial sums are
added in PyTorch, in a fixed order, so the result is deterministic. A whole row lives in registers, so widths up
to ``genesis_kernels.dispatch.MAX_NORM_WIDTH`` are served.

x, fx and weight/bias may each have their own dtype, as under autocast, where the residual stream x is fp32 and
fx comes out of half-precision matmuls: every tensor is loaded in its own dtype and upcast, y is written in
``torch.result_type(x, fx)`` (what eager ``alpha * x + fx`` gives) and each gradient in its input's dtype.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .swiglu import as_rows

# Programs work on (rows x width) tiles of about TILE_ELEMENTS, so narrow models' short rows still give each
# program enough work to hide memory latency.
TILE_ELEMENTS = 4096
# Interpreter programs run one after another: a few long ones beat many short ones there.
INTERPRETER_BACKWARD_PROGRAMS = 4


@triton.jit
def residual_norm_forward_kernel(
    X, FX, W, B, Y, RSTD, MEAN,
    stride_x, stride_fx, stride_y, n_rows, n_cols, alpha, eps,
    LAYER_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    mask = row_ok[:, None] & col_ok[None, :]
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    fx = tl.load(FX + rows[:, None] * stride_fx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    h = alpha * x + fx
    if LAYER_NORM:
        mean = tl.sum(h, 1) / n_cols
        centered = tl.where(mask, h - mean[:, None], 0.0)
        rstd = tl.rsqrt(tl.sum(centered * centered, 1) / n_cols + eps)
        normed = centered * rstd[:, None]
        tl.store(MEAN + rows, mean, mask=row_ok)
    else:
        rstd = tl.rsqrt(tl.sum(h * h, 1) / n_cols + eps)
        normed = h * rstd[:, None]
    y = normed * tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def residual_norm_backward_kernel(
    GRAD_Y, X, FX, W, RSTD, MEAN, GRAD_X, GRAD_FX, GRAD_W_PARTIAL, GRAD_B_PARTIAL,
    stride_grad_y, stride_x, stride_fx, stride_grad_in, n_rows, n_cols, rows_per_program, alpha,
    LAYER_NORM: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr,
):
    program = tl.program_id(0)
    cols = tl.arange(0, BLOCK_COLS)
    col_ok = cols < n_cols
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    grad_w = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    grad_b = tl.zeros([BLOCK_COLS], dtype=tl.float32)
    # int64 rows so that row * stride cannot overflow on large activations.
    first_row = program.to(tl.int64) * rows_per_program
    last_row = tl.minimum(first_row + rows_per_program, n_rows)
    for tile_start in range(first_row, last_row, BLOCK_ROWS):
        rows = tile_start + tl.arange(0, BLOCK_ROWS)
        row_ok = rows < last_row
        mask = row_ok[:, None] & col_ok[None, :]
        grad_y = tl.load(GRAD_Y + rows[:, None] * stride_grad_y + cols[None, :], mask=mask, other=0.0)
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        fx = tl.load(FX + rows[:, None] * stride_fx + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        grad_y = grad_y.to(tl.float32)
        h = alpha * x + fx
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        if LAYER_NORM:
            normed = tl.where(mask, (h - tl.load(MEAN + rows, mask=row_ok, other=0.0)[:, None]) * rstd[:, None], 0.0)
        else:
            normed = h * rstd[:, None]
        grad_normed = grad_y * w[None, :]
        grad_w += tl.sum(grad_y * normed, 0)
        if HAS_BIAS:
            grad_b += tl.sum(grad_y, 0)
        # d/dh of normed: rstd * (g - mean(g * normed) * normed), LayerNorm also subtracting mean(g).
        projection = tl.sum(grad_normed * normed, 1) / n_cols
        if LAYER_NORM:
            grad_h = rstd[:, None] * (grad_normed - (tl.sum(grad_normed, 1) / n_cols)[:, None]
                                      - normed * projection[:, None])
        else:
            grad_h = rstd[:, None] * (grad_normed - normed * projection[:, None])
        offsets = rows[:, None] * stride_grad_in + cols[None, :]
        tl.store(GRAD_FX + offsets, grad_h.to(GRAD_FX.dtype.element_ty), mask=mask)
        tl.store(GRAD_X + offsets, (alpha * grad_h).to(GRAD_X.dtype.element_ty), mask=mask)
    tl.store(GRAD_W_PARTIAL + program * n_cols + cols, grad_w, mask=col_ok)
    if HAS_BIAS:
        tl.store(GRAD_B_PARTIAL + program * n_cols + cols, grad_b, mask=col_ok)


def _tile(n_cols: int) -> dict:
    block_cols = triton.next_power_of_2(n_cols)
    num_warps = 4 if block_cols <= 1024 else 8 if block_cols <= 4096 else 16
    return dict(BLOCK_ROWS=max(1, TILE_ELEMENTS // block_cols), BLOCK_COLS=block_cols, num_warps=num_warps)


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
        tile = _tile(n_cols)
        y = torch.empty(x.shape, dtype=torch.result_type(x, fx), device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        mean = torch.empty(n_rows if layer_norm else 0, dtype=torch.float32, device=x.device)
        if n_rows:
            residual_norm_forward_kernel[(triton.cdiv(n_rows, tile["BLOCK_ROWS"]),)](
                x_rows, fx_rows, weight, bias if bias is not None else weight, y, rstd, mean,
                x_rows.stride(0), fx_rows.stride(0), n_cols, n_rows, n_cols, alpha, eps,
                LAYER_NORM=layer_norm, HAS_BIAS=bias is not None, **tile)
        ctx.save_for_backward(x, fx, weight, rstd, mean)
        ctx.has_bias, ctx.alpha, ctx.layer_norm = bias is not None, alpha, layer_norm
        ctx.bias_dtype = bias.dtype if bias is not None else None
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, fx, weight, rstd, mean = ctx.saved_tensors
        x_rows, fx_rows, grad_rows = as_rows(x), as_rows(fx), as_rows(grad_y)
        n_rows, n_cols = x_rows.shape
        tile = _tile(n_cols)
        # Each program owns a run of whole row tiles; their partial dweight/dbias are summed below.
        rows_per_program = triton.cdiv(triton.cdiv(max(n_rows, 1), _backward_programs(x.device)),
                                       tile["BLOCK_ROWS"]) * tile["BLOCK_ROWS"]
        programs = triton.cdiv(max(n_rows, 1), rows_per_program)
        # One contiguous layout for both, so they share the kernel's stride_grad_in.
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        grad_fx = torch.empty(x.shape, dtype=fx.dtype, device=x.device)
        grad_w_partial = torch.zeros((programs, n_cols), dtype=torch.float32, device=x.device)
        grad_b_partial = torch.zeros((programs if ctx.has_bias else 0, n_cols), dtype=torch.float32,
                                     device=x.device)
        if n_rows:
            residual_norm_backward_kernel[(programs,)](
                grad_rows, x_rows, fx_rows, weight, rstd, mean, grad_x, grad_fx, grad_w_partial, grad_b_partial,
                grad_rows.stride(0), x_rows.stride(0), fx_rows.stride(0), n_cols, n_rows, n_cols, rows_per_program,
                ctx.alpha, LAYER_NORM=ctx.layer_norm, HAS_BIAS=ctx.has_bias, **tile)
        grad_weight = grad_w_partial.sum(0).to(weight.dtype)
        grad_bias = grad_b_partial.sum(0).to(ctx.bias_dtype) if ctx.has_bias else None
        return grad_x, grad_fx, grad_weight, grad_bias, None, None, None


def residual_norm_triton(x: torch.Tensor, fx: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                         alpha: float = 1.0, eps: float = 1e-6, norm: str = "rms") -> torch.Tensor:
    """The Triton path of :func:`genesis_kernels.residual_norm` (same arguments, no dispatch)."""
    if norm not in ("rms", "layer"):
        raise ValueError(f"residual_norm: norm={norm!r} is not one of 'rms', 'layer'")
    if x.shape != fx.shape:
        raise ValueError(f"residual_norm: x {tuple(x.shape)} and fx {tuple(fx.shape)} must have one shape")
    width = x.shape[-1]
    if weight.shape != (width,) or (bias is not None and bias.shape != (width,)):
        raise ValueError(f"residual_norm: weight and bias must have shape ({width},), got "
                         f"{tuple(weight.shape)} and {None if bias is None else tuple(bias.shape)}")
    return ResidualNormFunction.apply(x, fx, weight.contiguous(), None if bias is None else bias.contiguous(),
                                      float(alpha), float(eps), norm == "layer")
