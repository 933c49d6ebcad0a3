"""In-run references: the machine's matmul peak and the bandwidth of a matrix-vector product over weights too large
for the cache. report.py expresses the training step as a fraction of the first and batch-1 decoding as a
fraction of the limit the second sets, both from the same run, so a busy or throttled machine moves both sides."""

import pytest
import torch

from benchmarks.workloads import DEVICE, ON_CUDA, synchronized

# A square product large enough to reach the BLAS's steady state (2048^3: ~40-90 ms on the CPU machine).
MATMUL_SIZE = 8192 if ON_CUDA else 2048
MATMUL_DTYPES = ("float32", "bfloat16")

# 1 GiB of weights: far beyond any last-level cache (480 MiB on the project's CPU machine, 50-60 MiB on an H100).
MATRIX_BYTES = 1 << 30
BANDWIDTH_DTYPES = ("float32", "bfloat16")
# A device copy is the GPU kernels' yardstick: the residual norm is judged against it.
BANDWIDTH_KINDS = ("matvec", "copy") if ON_CUDA else ("matvec",)


@pytest.mark.parametrize("dtype", MATMUL_DTYPES)
def test_matmul_peak(benchmark, dtype):
    a = torch.randn(MATMUL_SIZE, MATMUL_SIZE, device=DEVICE, dtype=getattr(torch, dtype))
    b = torch.randn_like(a)
    benchmark.group = "matmul_peak"
    benchmark.extra_info.update(impl="torch", dtype=dtype, flops=2 * MATMUL_SIZE**3)
    benchmark.pedantic(synchronized(lambda: a @ b), rounds=10, warmup_rounds=2)


@pytest.mark.parametrize("dtype", BANDWIDTH_DTYPES)
@pytest.mark.parametrize("kind", BANDWIDTH_KINDS)
def test_bandwidth(benchmark, kind, dtype):
    torch_dtype = getattr(torch, dtype)
    rows = 16384
    cols = MATRIX_BYTES // (rows * torch_dtype.itemsize)
    weights = torch.randn(rows, cols, device=DEVICE, dtype=torch_dtype)
    if kind == "matvec":
        x = torch.randn(cols, device=DEVICE, dtype=torch_dtype)
        run, moved = (lambda: weights @ x), MATRIX_BYTES
    else:
        destination = torch.empty_like(weights)
        run, moved = (lambda: destination.copy_(weights)), 2 * MATRIX_BYTES  # read + write
    benchmark.group = "bandwidth"
    benchmark.extra_info.update(impl="torch", kind=kind, dtype=dtype, bytes=moved)
    benchmark.pedantic(synchronized(run), rounds=10, warmup_rounds=2)
