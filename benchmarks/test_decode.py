"""Batch-1 KV-cache decoding, a 32-token prompt and 128 new greedy tokens: genesis_model.generate against HF
transformers' `generate` on a LlamaForCausalLM of the same shape, in the same run.

Implementations, one group per (preset, dtype): `decode_<preset>` (fp32 weights), `decode_bf16_<preset>`:
- "genesis": `generate(...)`, eager; "genesis-compiled": `generate(..., compile=True)`, the decode step compiled
  once (on a GPU one CUDA graph, with genesis_kernels' Triton decoding kernels unless the GPU family prefers the
  torch path); the warmup round pays for compiling; "genesis-torch", "genesis-compiled-torch" (GPU only): the
  same with auto's preference for the decoding ops set to the torch path (tuning/decode_variants.py: cuBLAS and
  SDPA), their peers;
- "hf": HF `generate` with its default dynamic cache; "hf-static-compiled" (GPU only): HF `generate` with its
  static cache, which HF compiles itself on a GPU (the GPU decoding target: genesis-compiled >= 3x this);
- "floor" (CPU): the same tokens' matrix-vector products alone (test_decode_floor).
Batch-1 decoding streams every weight once per token, so report.py sets tokens/s against the limit the in-run
matrix-vector bandwidth implies. gpu.sh runs the compiled implementations as a step of their own (`-k compiled`):
compiling deep_narrow_40's 40 layers takes minutes per side."""

import contextlib

import pytest
import torch
from genesis_model import generate
from genesis_model.model import linear

from benchmarks.workloads import (
    CUDA_ONLY,
    DECODE_NEW_TOKENS,
    DECODE_PROMPT_TOKENS,
    ON_CUDA,
    build_model,
    decode_bytes_per_token,
    model_config,
    on_device,
    random_tokens,
    synchronized,
)

# On a GPU the CPU shapes only measure launch overhead: tiny stays as a cross-check, deep_narrow_40 in bf16 is the case.
GPU_SKIPS = "on a GPU the CPU shapes measure launch overhead: only tiny fp32 is kept, as a cross-check"
CASES = [
    pytest.param("tiny", "float32", id="tiny-float32"),
    on_device("cpu", "small", "float32", reason=GPU_SKIPS),
    on_device("cpu", "tiny", "bfloat16", reason=GPU_SKIPS),
    on_device("cuda", "deep_narrow_40", "bfloat16", reason=CUDA_ONLY),
]
IMPLS = [
    "genesis",
    # Eager on a GPU a Triton launch costs more host time than a cuBLAS call: the eager step's peer on the torch path.
    on_device("cuda", "genesis-torch", reason="the Triton decoding kernels run on CUDA only"),
    "genesis-compiled",
    on_device("cuda", "genesis-compiled-torch", reason="the Triton decoding kernels run compiled on CUDA only"),
    "hf",
    on_device("cuda", "hf-static-compiled", reason="HF compiles its static cache on CUDA only"),
]
# deep_narrow_40's HF generate makes ~20 tokens/s on a GPU (launch-bound): fewer rounds keep gpu.sh in budget.
ROUNDS = 2 if ON_CUDA else 4


def group_name(preset: str, dtype: str) -> str:
    return f"decode_{preset}" if dtype == "float32" else f"decode_bf16_{preset}"


def decoder(impl: str, model, prompt: torch.Tensor):
    """A callable that generates DECODE_NEW_TOKENS tokens after `prompt` (1, P) and checks it got all of them."""
    if impl.startswith("genesis"):
        prompts = prompt.tolist()
        compile = impl.startswith("genesis-compiled")

        def decode():
            (new_tokens,) = generate(model, prompts, max_new_tokens=DECODE_NEW_TOKENS, compile=compile)
            assert len(new_tokens) == DECODE_NEW_TOKENS

        return decode

    # No end-of-sequence token: every run generates the full DECODE_NEW_TOKENS.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    if impl == "hf-static-compiled":
        model.generation_config.cache_implementation = "static"
    attention_mask = torch.ones_like(prompt)

    def decode():
        output = model.generate(input_ids=prompt, attention_mask=attention_mask, do_sample=False,
                                max_new_tokens=DECODE_NEW_TOKENS)
        assert output.shape[1] == prompt.shape[1] + DECODE_NEW_TOKENS

    return decode


@pytest.mark.parametrize("impl", IMPLS)  # varies fastest: a group's tests run back to back
@pytest.mark.parametrize(("preset", "dtype"), CASES)
def test_decode(benchmark, preset, dtype, impl):
    cfg = model_config(preset)
    torch_dtype = getattr(torch, dtype)
    model = build_model(impl.split("-")[0], cfg, torch_dtype).eval()
    prompt = random_tokens(1, DECODE_PROMPT_TOKENS)
    bytes_per_token = decode_bytes_per_token(cfg, torch_dtype.itemsize)
    benchmark.group = group_name(preset, dtype)
    benchmark.extra_info.update(
        impl=impl, preset=preset, dtype=dtype, prompt_tokens=DECODE_PROMPT_TOKENS, tokens=DECODE_NEW_TOKENS,
        bytes_per_token=bytes_per_token, bytes=bytes_per_token * DECODE_NEW_TOKENS,
    )
    # genesis-torch, genesis-compiled-torch: the step with the torch path for the decoding ops
    # (tuning/decode_variants.py), the product's peer measured on the whole model.
    variant = contextlib.nullcontext()
    if impl.endswith("-torch"):
        from benchmarks.tuning.decode_variants import VARIANTS, patched
        variant = patched(**VARIANTS["both: torch"])
    with variant:
        benchmark.pedantic(synchronized(decoder(impl, model, prompt)), rounds=ROUNDS, warmup_rounds=1)


@pytest.mark.parametrize(("preset", "dtype"), [
    pytest.param("tiny", "float32", id="tiny-float32"),
    on_device("cpu", "small", "float32", reason=GPU_SKIPS),
    on_device("cpu", "tiny", "bfloat16", reason=GPU_SKIPS),
])
def test_decode_floor(benchmark, preset, dtype):
    """The matrix-vector products of DECODE_NEW_TOKENS batch-1 steps alone, back to back: every projection and the
    LM head of the model's own weights through the model's own `linear`, with no attention, norms, sampling or
    Python between them. What decoding would cost if everything but reading the weights were free: its fraction
    of the bandwidth limit bounds what any decoder built on these products can reach."""
    cfg = model_config(preset)
    torch_dtype = getattr(torch, dtype)
    model = build_model("genesis", cfg, torch_dtype)
    weights = [weight for block in model.blocks
               for weight in (block.attn.qkv.weight, block.attn.out.weight, block.mlp.gate_up.weight,
                              block.mlp.down.weight)] + [model.embed.weight]
    inputs = [torch.randn(1, 1, weight.shape[1], device=weight.device, dtype=torch_dtype) for weight in weights]

    @torch.inference_mode()
    def floor():
        for _ in range(DECODE_NEW_TOKENS):
            for weight, x in zip(weights, inputs):
                linear(x, weight)

    bytes_per_token = decode_bytes_per_token(cfg, torch_dtype.itemsize)
    benchmark.group = group_name(preset, dtype)
    benchmark.extra_info.update(
        impl="floor", preset=preset, dtype=dtype, tokens=DECODE_NEW_TOKENS,
        bytes_per_token=bytes_per_token, bytes=bytes_per_token * DECODE_NEW_TOKENS,
    )
    benchmark.pedantic(synchronized(floor), rounds=ROUNDS, warmup_rounds=1)
