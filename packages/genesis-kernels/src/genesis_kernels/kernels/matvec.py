"""One-row projections, y = x @ W^T for a single row x, in Triton: the matrix-vector products of batch-1 decoding.

Why: on an H200, cuBLAS ran deep_narrow_40's one-row projections (768..4096 output rows, 768 or 2048 inputs, bf16)
at ~20% of the memory bandwidth, 767 us of a 1.38 ms token. Each program here takes a few weight rows, so the
grid covers the GPU even for 768 rows, reads its rows whole in one tile (one round trip to memory), in the weight's
dtype, and accumulates in fp32.

The row can be computed as it is loaded, which saves the kernel (and the launch gap, ~1 us inside a CUDA graph on
an H200) that would otherwise produce it:
- gated: the row holds [gate, up] of a SwiGLU MLP and the product is of silu(gate) * up (the down projection);
- residual norm: the row is RMSNorm(alpha * residual + x) * norm_weight, DeepNorm's residual norm, which every
  program recomputes for itself (one row of the model's width: a few KB from L2) and the first program also
  writes out, as the residual stream's next value (the MLP's gate/up projection after the attention residual).

Inference only (no backward). Registered as the ops ``genesis_kernels::matvec`` and
``genesis_kernels::residual_norm_matvec`` through ``torch.library.triton_op``, so ``torch.compile`` keeps them in
its graph (and in a CUDA graph) instead of breaking the graph around them. The model's one-row projections reach
them through ``genesis_kernels.matvec`` and ``genesis_kernels.residual_norm_matvec`` (dispatch.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

# A program reads its rows whole in one tile of ~TILE_ELEMENTS (one round trip to memory instead of a loop of
# dependent ones: a matrix-vector product is bound by the bytes in flight), columns beyond MAX_BLOCK_COLS in a
# loop; rows a program are halved until the grid has at least MIN_PROGRAMS programs (132 multiprocessors on an
# H100/H200). deep_narrow_40's projections: 192 to 1,024 programs, one tile each; its LM head 2,048.
TILE_ELEMENTS = 4096
MAX_BLOCK_COLS = 4096
MIN_PROGRAMS = 128
NUM_WARPS = 4
# With the residual norm every program first recomputes the whole row's norm: twice the rows and warps a program
# halve that work (benchmarks/tuning/decode_kernel_configs.py; figures: benchmarks/RESULTS.md, "Where the shipped
# constants come from").
NORM_TILE_ELEMENTS = 8192
NORM_NUM_WARPS = 8


@triton.jit
def _residual_row(X, RESIDUAL, cols, col_mask, alpha):
    """alpha * residual + x over ``cols`` in fp32, rounded to the input dtype first (the torch path's sum is a
    tensor of that dtype)."""
    x = tl.load(X + cols, mask=col_mask, other=0.0)
    h = tl.load(RESIDUAL + cols, mask=col_mask, other=0.0).to(tl.float32) * alpha + x.to(tl.float32)
    return h.to(x.dtype).to(tl.float32)


@triton.jit
def matvec_kernel(X, W, Y, RESIDUAL, NORM_W, H, n_rows, n_cols, stride_w, alpha, eps, GATED: tl.constexpr,
                  NORM: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
    program = tl.program_id(0)
    rows = program.to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < n_rows
    if NORM:
        # Every program needs the whole row's 1/rms before its first product.
        squares = tl.zeros((BLOCK_COLS,), dtype=tl.float32)
        for start in range(0, n_cols, BLOCK_COLS):
            cols = start + tl.arange(0, BLOCK_COLS)
            h = _residual_row(X, RESIDUAL, cols, cols < n_cols, alpha)
            squares += h * h
        # Cast: Inductor passes Python float arguments as fp64.
        inv_rms = (1.0 / tl.sqrt(tl.sum(squares, axis=0) / n_cols + eps)).to(tl.float32)
    acc = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        cols = start + tl.arange(0, BLOCK_COLS)
        col_mask = cols < n_cols
        # The weights first: theirs are the bytes that bound the kernel, so their loads go out before the row's
        # own loads and arithmetic (with the gated row loaded and computed first, an H200 profile of the decode
        # step put ~1.6 us a call on the down projection over its plain version).
        w = tl.load(W + rows[:, None] * stride_w + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                    other=0.0)
        if NORM:
            norm_w = tl.load(NORM_W + cols, mask=col_mask, other=0.0).to(tl.float32)
            h = _residual_row(X, RESIDUAL, cols, col_mask, alpha)
            x = (h * inv_rms * norm_w).to(H.dtype.element_ty)
            # The first program writes the normalized row (a mask of cols < 0 stores nothing elsewhere).
            tl.store(H + cols, x, mask=cols < tl.where(program == 0, n_cols, 0))
        else:
            x = tl.load(X + cols, mask=col_mask, other=0.0)
            if GATED:
                gate = x.to(tl.float32)
                up = tl.load(X + n_cols + cols, mask=col_mask, other=0.0).to(tl.float32)
                # Rounded to the row's dtype, as the torch path's activation is before its projection.
                x = (gate * tl.sigmoid(gate) * up).to(x.dtype)
        acc += tl.sum(w.to(tl.float32) * x.to(tl.float32)[None, :], axis=1)
    tl.store(Y + rows, acc.to(Y.dtype.element_ty), mask=row_mask)


def _launch(n_rows: int, n_cols: int, min_programs: int = MIN_PROGRAMS,
            norm: bool = False) -> tuple[tuple[int], dict]:
    tile_elements, num_warps = (NORM_TILE_ELEMENTS, NORM_NUM_WARPS) if norm else (TILE_ELEMENTS, NUM_WARPS)
    block_cols = min(MAX_BLOCK_COLS, triton.next_power_of_2(n_cols))
    block_rows = max(1, tile_elements // block_cols)
    while block_rows > 1 and triton.cdiv(n_rows, block_rows) < min_programs:
        block_rows //= 2
    return (triton.cdiv(n_rows, block_rows),), dict(BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
                                                    num_warps=num_warps)


def _run(x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor,
         h: torch.Tensor, alpha: float, eps: float, gated: bool, norm: bool) -> None:
    n_rows, n_cols = weight.shape
    if n_rows:
        # The interpreter runs programs one after another: there, fewer and larger ones.
        grid, meta = _launch(n_rows, n_cols, MIN_PROGRAMS if x.device.type == "cuda" else 1, norm)
        wrap_triton(matvec_kernel)[grid](x, weight, y, residual, norm_weight, h, n_rows, n_cols, weight.stride(0),
                                         alpha, eps, GATED=gated, NORM=norm, **meta)


@triton_op("genesis_kernels::matvec", mutates_args=())
def _matvec(x: torch.Tensor, weight: torch.Tensor, gated: bool) -> torch.Tensor:
    y = torch.empty(weight.shape[0], dtype=x.dtype, device=x.device)
    # Without the norm its pointers are never read or written: x and y stand in.
    _run(x, weight, y, x, x, y, 1.0, 0.0, gated, False)
    return y


@triton_op("genesis_kernels::residual_norm_matvec", mutates_args=())
def _residual_norm_matvec(x: torch.Tensor, fx: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                          alpha: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty(weight.shape[0], dtype=fx.dtype, device=fx.device)
    h = torch.empty_like(fx)
    _run(fx, weight, y, x, norm_weight, h, alpha, eps, False, True)
    return h, y


def _check(x: torch.Tensor, weight: torch.Tensor, width: int, width_name: str) -> torch.Tensor:
    """weight, made unit-stride in its columns, after checking that x is one row of ``width`` in weight's dtype."""
    if weight.dim() != 2 or x.shape[-1] != width:
        raise ValueError(f"matvec: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not multiply "
                         f"(weight must be (N, K) for x (..., {width_name}))")
    if x.numel() != x.shape[-1]:
        raise ValueError(f"matvec: x {tuple(x.shape)} holds more than one row; use F.linear for batches")
    if x.dtype != weight.dtype:
        raise ValueError(f"matvec: x and weight dtypes differ ({x.dtype}, {weight.dtype})")
    return weight if weight.stride(1) == 1 else weight.contiguous()


def matvec_triton(x: torch.Tensor, weight: torch.Tensor, gated: bool = False) -> torch.Tensor:
    """x @ weight.T for x of shape (..., K) holding one row, weight (N, K): returns x.shape[:-1] + (N,).
    gated: x is (..., 2K), [gate, up], and the product is silu(gate) * up @ weight.T."""
    weight = _check(x, weight, 2 * weight.shape[-1] if gated else weight.shape[-1], "2K" if gated else "K")
    return _matvec(x.reshape(-1).contiguous(), weight, gated).view(*x.shape[:-1], weight.shape[0])


def residual_norm_matvec_triton(x: torch.Tensor, fx: torch.Tensor, norm_weight: torch.Tensor, weight: torch.Tensor,
                                alpha: float = 1.0, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """h = RMSNorm(alpha * x + fx) * norm_weight for x, fx of shape (..., K) holding one row, and h @ weight.T:
    returns (h, y), y of shape x.shape[:-1] + (N,)."""
    weight = _check(fx, weight, weight.shape[-1], "K")
    if x.shape != fx.shape or norm_weight.shape != (fx.shape[-1],):
        raise ValueError(f"residual_norm_matvec: x {tuple(x.shape)}, fx {tuple(fx.shape)} and norm_weight "
                         f"{tuple(norm_weight.shape)} must be one row of K and (K,)")
    if x.dtype != fx.dtype or norm_weight.dtype != fx.dtype:
        raise ValueError(f"residual_norm_matvec: x {x.dtype}, fx {fx.dtype} and norm_weight {norm_weight.dtype} "
                         "must share a dtype")
    h, y = _residual_norm_matvec(x.reshape(-1).contiguous(), fx.reshape(-1).contiguous(), norm_weight.contiguous(),
                                 weight, alpha, eps)
    return h.view(x.shape), y.view(*x.shape[:-1], weight.shape[0])
