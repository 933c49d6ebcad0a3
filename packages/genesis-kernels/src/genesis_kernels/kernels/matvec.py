"""One-row projections, y = x @ W^T for a single row x, in Triton: the matrix-vector products of batch-1 decoding.

Why: on an H200, cuBLAS ran deep_narrow_40's one-row projections (768..4096 output rows, 768 or 2048 inputs, bf16)
at ~20% of the memory bandwidth, 767 us of a 1.38 ms token. Each program here takes a few weight rows, so the
grid covers the GPU even for 768 rows, reads its rows whole in one tile (one round trip to memory), in the weight's
dtype, and accumulates in fp32.

With ``gated=True`` the row holds [gate, up] of a SwiGLU MLP and the product is of silu(gate) * up, computed as the
row is loaded: the down projection then needs no kernel of its own for the activation (one launch and its gap fewer
a layer in a decode step).

Inference only (no backward). Registered as the op ``genesis_kernels::matvec`` through ``torch.library.triton_op``,
so ``torch.compile`` keeps it in its graph (and in a CUDA graph) instead of breaking the graph around it.
The model's one-row projections reach it through ``genesis_kernels.matvec`` (dispatch.py).
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


@triton.jit
def matvec_kernel(X, W, Y, n_rows, n_cols, stride_w, GATED: tl.constexpr, BLOCK_ROWS: tl.constexpr,
                  BLOCK_COLS: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    row_mask = rows < n_rows
    acc = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_COLS):
        cols = start + tl.arange(0, BLOCK_COLS)
        col_mask = cols < n_cols
        x = tl.load(X + cols, mask=col_mask, other=0.0)
        if GATED:
            gate = x.to(tl.float32)
            up = tl.load(X + n_cols + cols, mask=col_mask, other=0.0).to(tl.float32)
            # Rounded to the row's dtype, as the torch path's activation is before its projection.
            x = (gate * tl.sigmoid(gate) * up).to(x.dtype)
        x = x.to(tl.float32)
        w = tl.load(W + rows[:, None] * stride_w + cols[None, :], mask=row_mask[:, None] & col_mask[None, :],
                    other=0.0).to(tl.float32)
        acc += tl.sum(w * x[None, :], axis=1)
    tl.store(Y + rows, acc.to(Y.dtype.element_ty), mask=row_mask)


def _launch(n_rows: int, n_cols: int, min_programs: int = MIN_PROGRAMS) -> tuple[tuple[int], dict]:
    block_cols = min(MAX_BLOCK_COLS, triton.next_power_of_2(n_cols))
    block_rows = max(1, TILE_ELEMENTS // block_cols)
    while block_rows > 1 and triton.cdiv(n_rows, block_rows) < min_programs:
        block_rows //= 2
    return (triton.cdiv(n_rows, block_rows),), dict(BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
                                                    num_warps=NUM_WARPS)


@triton_op("genesis_kernels::matvec", mutates_args=())
def _matvec(x: torch.Tensor, weight: torch.Tensor, gated: bool) -> torch.Tensor:
    n_rows, n_cols = weight.shape
    y = torch.empty(n_rows, dtype=x.dtype, device=x.device)
    if n_rows:
        # The interpreter runs programs one after another: there, fewer and larger ones.
        grid, meta = _launch(n_rows, n_cols, MIN_PROGRAMS if x.device.type == "cuda" else 1)
        wrap_triton(matvec_kernel)[grid](x, weight, y, n_rows, n_cols, weight.stride(0), GATED=gated, **meta)
    return y


def matvec_triton(x: torch.Tensor, weight: torch.Tensor, gated: bool = False) -> torch.Tensor:
    """x @ weight.T for x of shape (..., K) holding one row, weight (N, K): returns x.shape[:-1] + (N,).
    gated: x is (..., 2K), [gate, up], and the product is silu(gate) * up @ weight.T."""
    width = 2 * weight.shape[-1] if gated else weight.shape[-1]
    if weight.dim() != 2 or x.shape[-1] != width:
        raise ValueError(f"matvec: x {tuple(x.shape)} and weight {tuple(weight.shape)} do not multiply "
                         f"(weight must be (N, K) for x (..., {'2K' if gated else 'K'}))")
    if x.numel() != x.shape[-1]:
        raise ValueError(f"matvec: x {tuple(x.shape)} holds more than one row; use F.linear for batches")
    if x.dtype != weight.dtype:
        raise ValueError(f"matvec: x and weight dtypes differ ({x.dtype}, {weight.dtype})")
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    return _matvec(x.reshape(-1).contiguous(), weight, gated).view(*x.shape[:-1], weight.shape[0])
