"""``genesis-kernels bench``: times each backend's attention against SDPA and naive attention, and SwiGLU and the
residual norm on each backend, printing milliseconds, throughput and peak extra memory."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from . import reference
from .dispatch import available_backends, flash_attention, residual_norm, swiglu
from .memory import peak_memory


def attention_flops(batch: int, heads: int, seq_len: int, head_dim: int, causal: bool = True,
                    backward: bool = False) -> float:
    """Matmul FLOPs of attention on (batch, heads, seq_len, head_dim): QK^T and PV, halved when causal (the
    unmasked half); with ``backward``, forward plus backward, which does 2.5x the forward's (FlashAttention-2)."""
    forward = 4 * batch * heads * seq_len * seq_len * head_dim * (0.5 if causal else 1.0)
    return 3.5 * forward if backward else forward


def _time_ms(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """Median milliseconds of ``fn`` after a warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            start_s = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start_s) * 1e3)
    return statistics.median(times)


def _attention_providers(device: torch.device, triton_timed: bool, causal: bool) -> dict[str, Callable]:
    providers = {}
    if triton_timed:
        providers["triton"] = lambda q, k, v: flash_attention(q, k, v, causal, backend="triton")
    providers["sdpa"] = lambda q, k, v: flash_attention(q, k, v, causal, backend="torch")
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def sdpa_flash(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        providers["sdpa-flash"] = sdpa_flash
    providers["naive"] = lambda q, k, v: reference.attention(q, k, v, causal, dtype=None)
    return providers


BENCH_COLUMNS = [("op", 13), ("seq/rows", 8), ("provider", 10), ("mode", 7), ("ms", 10), ("throughput", 16),
                 ("peak MiB", 9)]


def _bench_row(*cells: object) -> None:
    """Print one row of the bench table as soon as it is measured (a long GPU run may be cut short)."""
    print("  ".join(str(cell).ljust(width) for cell, (_, width) in zip(cells, BENCH_COLUMNS)).rstrip(), flush=True)


def _bench_modes(op: str, size: int, provider: str, device: torch.device, reps: int,
                 inputs: tuple[torch.Tensor, ...], modes: list[tuple[str, Callable[[], object], Callable]]) -> None:
    """Time each (mode, step, throughput-from-ms) and measure its peak extra memory in a separate run."""
    for mode, step, throughput in modes:
        try:
            ms = _time_ms(step, device, reps)
            with peak_memory(device, inputs) as peak:
                step()
        except RuntimeError as error:  # a backend that refuses the case, or out of memory
            _bench_row(op, size, provider, mode, "-", "-", f"skipped: {str(error).splitlines()[0][:80]}")
            continue
        _bench_row(op, size, provider, mode, f"{ms:.3f}", throughput(ms), f"{peak.bytes / 2**20:.1f}")


def run(device: torch.device, dtype: torch.dtype | None = None, *, seq_lens: list[int] | None = None,
        tokens: int | None = None, heads: int = 16, head_dim: int = 64, causal: bool = True, swiglu_width: int = 2048,
        norm_width: int = 768, reps: int = 20) -> int:
    """Print the table; None picks the device's default (bf16, S = 512..8192 and 16k tokens a batch on CUDA)."""
    on_gpu = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if on_gpu else torch.float32)
    triton_timed = "triton" in available_backends(device) and on_gpu
    seq_lens = seq_lens or ([512, 1024, 2048, 4096, 8192] if on_gpu else [128, 256, 512])
    tokens = tokens or (16384 if on_gpu else 2048)
    print(f"genesis-kernels bench on {device}, {str(dtype).removeprefix('torch.')}, torch {torch.__version__}, "
          f"{tokens} tokens a batch, {heads} heads, head_dim {head_dim}{', causal' if causal else ''}")
    if not on_gpu:
        print("note: on the CPU only the non-interpreter backends are timed (the Triton interpreter runs "
              "kernels in Python; its time says nothing about the kernels)")
    _bench_row(*(name for name, _ in BENCH_COLUMNS))
    _bench_row(*("-" * width for _, width in BENCH_COLUMNS))
    naive_limit = (8 << 30) if on_gpu else (1 << 30)
    for seq_len in seq_lens:
        batch = max(1, tokens // seq_len)
        shape = (batch, heads, seq_len, head_dim)
        forward_flops = attention_flops(batch, heads, seq_len, head_dim, causal)
        fwd_bwd_flops = attention_flops(batch, heads, seq_len, head_dim, causal, backward=True)
        for name, attention in _attention_providers(device, triton_timed, causal).items():
            if name == "naive" and batch * heads * seq_len * seq_len * 4 * 3 > naive_limit:
                _bench_row("attention", seq_len, name, "-", "-", "-", "skipped: score matrix too large")
                continue
            q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
            grad = torch.randn(shape, device=device, dtype=dtype)
            _bench_modes("attention", seq_len, name, device, reps, (q, k, v), [
                ("fwd", lambda: attention(q, k, v), lambda ms: f"{forward_flops / ms / 1e9:.3g} TFLOP/s"),
                ("fwd+bwd", lambda: attention(q, k, v).backward(grad),
                 lambda ms: f"{fwd_bwd_flops / ms / 1e9:.3g} TFLOP/s"),
            ])
    for op, width in (("swiglu", swiglu_width), ("residual_norm", norm_width)):
        for backend in (["triton"] if triton_timed else []) + ["torch"]:
            _bench_rowwise(op, width, tokens, backend, reps, device, dtype)
    return 0


def _bench_rowwise(op: str, width: int, rows: int, backend: str, reps: int, device: torch.device,
                   dtype: torch.dtype) -> None:
    """Forward and forward+backward of swiglu or residual_norm on (rows, width), in GB/s moved."""
    inputs = tuple(torch.randn(rows, width, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    weight = torch.ones(width, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn(rows, width, device=device, dtype=dtype)
    if op == "swiglu":
        def call():
            return swiglu(*inputs, backend=backend)
    else:
        def call():
            return residual_norm(*inputs, weight, alpha=2.0, backend=backend)
    # Both read two (rows, width) tensors and write one forward; backward reads three and writes two.
    forward_bytes, backward_bytes = 3 * inputs[0].nbytes, 5 * inputs[0].nbytes
    _bench_modes(op, rows, backend, device, reps, inputs, [
        ("fwd", call, lambda ms: f"{forward_bytes / ms / 1e6:.4g} GB/s"),
        ("fwd+bwd", lambda: call().backward(grad),
         lambda ms: f"{(forward_bytes + backward_bytes) / ms / 1e6:.4g} GB/s"),
    ])

