"""What the benchmark groups measure: the device, the target shapes, the FLOP and byte counts behind the
report's rates, and the peer models Genesis is compared against.

Rates are computed by report.py from what each test records in `benchmark.extra_info`:
- `impl`: the implementation ("genesis", "hf", "sdpa", "naive", "eager"; "genesis-<backend>" for kernels);
- `flops`, `tokens`, `bytes`: the work of one timed call, so `work / time` is a rate.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from genesis_kernels import available_backends
from genesis_model import GenesisLM, ModelConfig
from genesis_model.config import matmul_parameters

# Kernel groups: a few untimed calls first (the first calls of an op pay for fresh allocations, which would bias
# whichever implementation of a group runs first), then 2 s of rounds: the fastest of many is the least disturbed
# by other load.
KERNEL_TIMING = pytest.mark.benchmark(warmup=True, warmup_iterations=20, max_time=2.0)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_CUDA = DEVICE.type == "cuda"
REPO_ROOT = Path(__file__).resolve().parent.parent
BIBLE_DIR = REPO_ROOT.parent / "shared" / "bible"


def device_name() -> str:
    """The GPU's name, or the CPU model when there is no GPU: what a baseline is valid for."""
    if ON_CUDA:
        return torch.cuda.get_device_name(DEVICE)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def device_slug(name: str) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'intel-xeon-processor'; 'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3'."""
    name = re.sub(r"\((r|tm)\)", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "unknown-device"


def on_device(kind: str, *values, reason: str):
    """A pytest.param of `values` that runs only on `kind` ("cuda" or "cpu") and skips elsewhere with `reason`."""
    return pytest.param(*values, marks=pytest.mark.skipif(DEVICE.type != kind, reason=reason),
                        id="-".join(map(str, values)))


CUDA_ONLY = "GPU-sized case: runs on CUDA only"
CPU_ONLY = "compiling a training step costs more than gpu.sh's budget on a GPU: timed on the CPU only"


def synchronized(fn):
    """`fn` followed by a device synchronization, so a timer around it measures the kernels, not their launch."""
    if not ON_CUDA:
        return fn

    def run():
        fn()
        torch.cuda.synchronize()

    return run


def interleaved_rounds(calls: dict[str, Callable[[], object]], rounds: int,
                       warmup_rounds: int) -> dict[str, list[float]]:
    """Seconds of each call in every timed round. A round runs each call once, and the order rotates from round to
    round, so that a slow phase of a shared machine (other load, clocks) falls on every side alike and the per-round
    ratios show how far the machine moved. Warmup rounds (compiling, first allocations) are not timed."""
    names = list(calls)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for index in range(warmup_rounds + rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            call = synchronized(calls[name])
            start = time.perf_counter()
            call()
            if index >= warmup_rounds:
                seconds[name].append(time.perf_counter() - start)
    return seconds


# -- model shapes -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainShape:
    preset: str
    batch_size: int
    seq_len: int

    @property
    def tokens(self) -> int:
        return self.batch_size * self.seq_len


# The targets' shapes: "tiny" 8 x 256 tokens a step, "small" 4 x 512; on a GPU, deep_narrow_40 at 16 x 1024 in bf16.
TRAIN_SHAPES = {
    "tiny": TrainShape("tiny", 8, 256),
    "small": TrainShape("small", 4, 512),
    "deep_narrow_40": TrainShape("deep_narrow_40", 16, 1024),
}
VOCAB_SIZE = 8192
DECODE_PROMPT_TOKENS = 32
DECODE_NEW_TOKENS = 128


def model_config(preset: str) -> ModelConfig:
    return ModelConfig.from_preset(preset, vocab_size=VOCAB_SIZE)


def decode_bytes_per_token(cfg, bytes_per_weight: int) -> int:
    """Weights a batch-1 decoding step streams from memory (the KV cache, < 2% here, is left out)."""
    return matmul_parameters(cfg) * bytes_per_weight


def hf_llama(cfg):
    """transformers' LlamaForCausalLM with Genesis's width, depth, heads, MLP, vocabulary and embedding tying."""
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_embeddings,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(hf_config)


def requires_transformers():
    """Skip (with the reason) where the peers are not installed: they live only in the hatch `bench` environment."""
    return pytest.importorskip("transformers", reason="peers need transformers (hatch env `bench`)")


# -- kernel benchmarks --------------------------------------------------------------------------------------------
KERNEL_DTYPE = torch.bfloat16 if ON_CUDA else torch.float32
PASSES = ("fwd", "fwdbwd")


GENESIS_KERNEL_BACKENDS = ("triton", "torch")


def genesis_kernel_impl_params() -> list:
    """'genesis-<backend>' for each genesis_kernels backend, skipped where it cannot run: on the CPU only the torch
    fallback runs (conftest.py keeps the Triton interpreter, which would time numpy, off)."""
    runs_here = available_backends(DEVICE)
    return [
        pytest.param(f"genesis-{backend}", marks=pytest.mark.skipif(
            backend not in runs_here, reason=f"backend '{backend}' does not run on {DEVICE.type} here "
                                             "(Triton is timed only on CUDA)"))
        for backend in GENESIS_KERNEL_BACKENDS
    ]


def kernel_call(fn, inputs: list[torch.Tensor], pass_: str):
    """A synchronized callable that runs `fn(*inputs)` forward only ("fwd"), or forward and backward into every
    input ("fwdbwd", gradients cleared after each call as a training step would)."""
    if pass_ == "fwd":

        def forward():
            with torch.no_grad():
                fn(*inputs)

        return synchronized(forward)
    inputs = [t.detach().requires_grad_(True) for t in inputs]
    with torch.no_grad():
        grad_out = torch.randn_like(fn(*inputs))

    def forward_backward():
        fn(*inputs).backward(grad_out)
        for t in inputs:
            t.grad = None

    return synchronized(forward_backward)


# -- models -------------------------------------------------------------------------------------------------------
MODEL_IMPLS = ("genesis", "hf")


def build_model(impl: str, cfg, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A freshly initialized GenesisLM, or its HF peer (skipped where transformers is absent), on DEVICE."""
    if impl == "hf":
        requires_transformers()
    torch.manual_seed(0)
    with DEVICE:  # initialized where it runs: a 300M-parameter model builds in seconds on a GPU
        if impl == "genesis":
            model = GenesisLM(cfg)
        else:
            model = hf_llama(cfg)
    return model.to(dtype=dtype)


def logits_of(impl: str, model, input_ids: torch.Tensor) -> torch.Tensor:
    if impl.startswith("genesis"):
        return model(input_ids)
    # HF's best training configuration: no KV cache built during a training forward.
    return model(input_ids=input_ids, use_cache=False).logits


def two_input_bytes(shape: tuple[int, int], pass_: str) -> int:
    """Memory traffic of a fused elementwise op of two same-shaped inputs (SwiGLU's gate and up, the residual
    norm's x and f(x)): the forward reads both and writes the output; forward+backward adds reading both again
    with the output's gradient and writing their gradients (the activation is recomputed, not saved; a norm
    weight's single row is negligible)."""
    elements = shape[0] * shape[1]
    return elements * KERNEL_DTYPE.itemsize * (3 if pass_ == "fwd" else 8)

def random_tokens(*shape: int, vocab_size: int = VOCAB_SIZE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, shape, generator=generator).to(DEVICE)
