"""SwiGLU, silu(gate) * up: genesis_kernels.swiglu on each backend that runs here against the eager expression.
Target: no slower than eager (on the CPU the fallback is that expression, so this measures dispatch overhead)."""

import pytest
import torch
import torch.nn.functional as F
from genesis_kernels import swiglu

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

# The MLP activations of one training step: small's 4 x 512 tokens x 1376 on the CPU; the GPU-sized (16384, 2048) on
# CUDA.
SHAPE = (16384, 2048) if ON_CUDA else (2048, 1376)


def eager_swiglu(gate, up):
    return F.silu(gate) * up


def genesis(backend):
    return lambda gate, up: swiglu(gate, up, backend=backend)


IMPLS = {**{f"genesis-{backend}": genesis(backend) for backend in GENESIS_KERNEL_BACKENDS}, "eager": eager_swiglu}
IMPL_PARAMS = [*genesis_kernel_impl_params(), "eager"]


@pytest.mark.parametrize("impl", IMPL_PARAMS)  # varies fastest: a group's tests run back to back
@pytest.mark.parametrize("pass_", PASSES)
def test_swiglu(benchmark, impl, pass_):
    gate, up = (torch.randn(SHAPE, device=DEVICE, dtype=KERNEL_DTYPE) for _ in range(2))
    benchmark.group = "swiglu" if pass_ == "fwd" else "swiglu_fwdbwd"
    benchmark.extra_info.update(impl=impl, bytes=two_input_bytes(SHAPE, pass_), shape=list(SHAPE))
    benchmark(kernel_call(IMPLS[impl], [gate, up], pass_))
