"""Causal attention, forward and forward+backward: genesis_kernels.flash_attention on each backend that runs here,
against calling torch SDPA directly and against naive softmax(QK^T)V, at several sequence lengths.

On the CPU the target is the fallback's overhead (within 5% of SDPA); on CUDA the Triton kernel against SDPA's
default backend and its FlashAttention-2 backend."""

import pytest
import torch
import torch.nn.functional as F
from genesis_kernels import flash_attention, reference
from genesis_kernels.bench import attention_flops
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks.workloads import (
    DEVICE,
    GENESIS_KERNEL_BACKENDS,
    KERNEL_TIMING,
    KERNEL_DTYPE,
    ON_CUDA,
    PASSES,
    genesis_kernel_impl_params,
    kernel_call,
    on_device,
)

pytestmark = KERNEL_TIMING

# The GPU kernels' target grid (head_dim 64, 16k tokens a batch, S = 512..8192); a CPU-sized one otherwise.
SEQ_LENS = (512, 1024, 2048, 4096, 8192) if ON_CUDA else (512, 1024, 2048)
TOKENS_PER_BATCH = 16384 if ON_CUDA else 4096
HEADS = 12 if ON_CUDA else 4
HEAD_DIM = 64


def naive_attention(q, k, v):
    """The (S, S) score matrix in memory, in the inputs' dtype: what flash attention is meant to beat."""
    return reference.attention(q, k, v, causal=True, dtype=None)


def sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def sdpa_flash(q, k, v):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def genesis(backend):
    return lambda q, k, v: flash_attention(q, k, v, causal=True, backend=backend)


IMPLS = {
    **{f"genesis-{backend}": genesis(backend) for backend in GENESIS_KERNEL_BACKENDS},
    "sdpa": sdpa,
    "sdpa-flash": sdpa_flash,
    "naive": naive_attention,
}
IMPL_PARAMS = [
    *genesis_kernel_impl_params(),
    "sdpa",
    on_device("cuda", "sdpa-flash", reason="SDPA's FlashAttention-2 backend runs on CUDA only"),
    "naive",
]


# Implementations vary fastest, so a group's tests run back to back under the same machine load.
@pytest.mark.parametrize("impl", IMPL_PARAMS)
@pytest.mark.parametrize("seq_len", SEQ_LENS)
@pytest.mark.parametrize("pass_", PASSES)
def test_attention(benchmark, impl, seq_len, pass_):
    batch = max(1, TOKENS_PER_BATCH // seq_len)
    q, k, v = (torch.randn(batch, HEADS, seq_len, HEAD_DIM, device=DEVICE, dtype=KERNEL_DTYPE) for _ in range(3))
    benchmark.group = f"attention_{pass_}_{seq_len}"
    benchmark.extra_info.update(impl=impl, dtype=str(KERNEL_DTYPE).removeprefix("torch."),
                                flops=attention_flops(batch, HEADS, seq_len, HEAD_DIM, backward=pass_ != "fwd"),
                                tokens=batch * seq_len)
    benchmark(kernel_call(IMPLS[impl], [q, k, v], pass_))
