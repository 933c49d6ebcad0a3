"""The DeepNorm residual, RMSNorm(alpha * x + f(x)) * weight: genesis_kernels.residual_norm on each backend that
runs here against the unfused eager expression. Target: no slower than eager."""

import pytest
import torch
from genesis_kernels import residual_norm

from benchmarks.workloads import (
    DEVICE,
    GENESIS_KERNEL_BACKENDS,
    KERNEL_TIMING,
    KERNEL_DTYPE,
    ON_CUDA,
    PASSES,
    genesis_kernel_impl_params,
    kernel_call,
    two_input_bytes,
)

pytestmark = KERNEL_TIMING

# One training step's residual stream: small's 4 x 512 tokens x 512 on the CPU; the GPU-sized (16384, 768) on CUDA.
SHAPE = (16384, 768) if ON_CUDA else (2048, 512)
ALPHA = (2 * 8) ** 0.25  # DeepNorm's (2N)^(1/4) at small's 8 layers
EPS = 1e-6


def eager_residual_norm(x, fx, weight):
    h = ALPHA * x + fx
    return h * torch.rsqrt(h.pow(2).mean(dim=-1, keepdim=True) + EPS) * weight


def genesis(backend):
    return lambda x, fx, weight: residual_norm(x, fx, weight, alpha=ALPHA, eps=EPS, norm="rms", backend=backend)


IMPLS = {
    **{f"genesis-{backend}": genesis(backend) for backend in GENESIS_KERNEL_BACKENDS},
    "eager": eager_residual_norm,
}
IMPL_PARAMS = [*genesis_kernel_impl_params(), "eager"]


@pytest.mark.parametrize("impl", IMPL_PARAMS)  # varies fastest: a group's tests run back to back
@pytest.mark.parametrize("pass_", PASSES)
def test_residual_norm(benchmark, impl, pass_):
    x, fx = (torch.randn(SHAPE, device=DEVICE, dtype=KERNEL_DTYPE) for _ in range(2))
    weight = torch.rand(SHAPE[1], device=DEVICE, dtype=KERNEL_DTYPE) + 0.5
    benchmark.group = "residual_norm" if pass_ == "fwd" else "residual_norm_fwdbwd"
    benchmark.extra_info.update(impl=impl, bytes=two_input_bytes(SHAPE, pass_), shape=list(SHAPE))
    benchmark(kernel_call(IMPLS[impl], [x, fx, weight], pass_))
