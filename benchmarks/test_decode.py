"""Batch-1 KV-cache decoding, a 32-token prompt and 128 new greedy tokens: genesis_model.generate against HF
transformers' `generate` (its default dynamic cache) on a LlamaForCausalLM of the same shape, in the same run.

Batch-1 decoding streams every weight once per token, so report.py sets tokens/s against the limit the in-run
matrix-vector bandwidth implies. Groups: `decode_<preset>` (fp32 weights), `decode_bf16_<preset>`, and on a GPU
`decode_compiled_bf16_<preset>`: `generate(compile=True)` (the whole decode step one CUDA graph) against HF's
static cache, which HF's `generate` compiles itself (issue 5's GPU target: >= 3x HF there)."""

import pytest
import torch
from genesis_model import generate

from benchmarks.workloads import (
    CUDA_ONLY,
    DECODE_NEW_TOKENS,
    DECODE_PROMPT_TOKENS,
    MODEL_IMPLS,
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
    pytest.param("tiny", "float32", "eager", id="tiny-float32-eager"),
    on_device("cpu", "small", "float32", "eager", reason=GPU_SKIPS),
    on_device("cpu", "tiny", "bfloat16", "eager", reason=GPU_SKIPS),
    on_device("cuda", "deep_narrow_40", "bfloat16", "eager", reason=CUDA_ONLY),
    # Compiling 40 layers takes minutes per side: gpu.sh runs this case as a step of its own.
    on_device("cuda", "deep_narrow_40", "bfloat16", "compiled", reason=CUDA_ONLY),
]
# deep_narrow_40's HF generate makes ~20 tokens/s on a GPU (launch-bound): fewer rounds keep gpu.sh in budget.
ROUNDS = 2 if ON_CUDA else 4


def group_name(preset: str, dtype: str, mode: str = "eager") -> str:
    prefix = "decode" if mode == "eager" else f"decode_{mode}"
    return f"{prefix}_{preset}" if dtype == "float32" else f"{prefix}_bf16_{preset}"


def decoder(impl: str, model, prompt: torch.Tensor, mode: str = "eager"):
    """A callable that generates DECODE_NEW_TOKENS tokens after `prompt` (1, P) and checks it got all of them.
    mode "compiled": Genesis compiles its decode step, HF decodes into its static cache (which it compiles)."""
    if impl == "genesis":
        prompts = prompt.tolist()

        def decode():
            (new_tokens,) = generate(model, prompts, max_new_tokens=DECODE_NEW_TOKENS, compile=mode == "compiled")
            assert len(new_tokens) == DECODE_NEW_TOKENS

        return decode

    # No end-of-sequence token: every run generates the full DECODE_NEW_TOKENS.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    if mode == "compiled":
        model.generation_config.cache_implementation = "static"
    attention_mask = torch.ones_like(prompt)

    def decode():
        output = model.generate(input_ids=prompt, attention_mask=attention_mask, do_sample=False,
                                max_new_tokens=DECODE_NEW_TOKENS)
        assert output.shape[1] == prompt.shape[1] + DECODE_NEW_TOKENS

    return decode


@pytest.mark.parametrize("impl", MODEL_IMPLS)  # varies fastest: a group's tests run back to back
@pytest.mark.parametrize(("preset", "dtype", "mode"), CASES)
def test_decode(benchmark, preset, dtype, mode, impl):
    cfg = model_config(preset)
    torch_dtype = getattr(torch, dtype)
    model = build_model(impl, cfg, torch_dtype).eval()
    prompt = random_tokens(1, DECODE_PROMPT_TOKENS)
    bytes_per_token = decode_bytes_per_token(cfg, torch_dtype.itemsize)
    benchmark.group = group_name(preset, dtype, mode)
    benchmark.extra_info.update(
        impl=impl, preset=preset, dtype=dtype, mode=mode, prompt_tokens=DECODE_PROMPT_TOKENS, tokens=DECODE_NEW_TOKENS,
        bytes_per_token=bytes_per_token, bytes=bytes_per_token * DECODE_NEW_TOKENS,
    )
    # The warmup round also compiles (mode "compiled"); timed rounds reuse the compiled step.
    benchmark.pedantic(synchronized(decoder(impl, model, prompt, mode)), rounds=ROUNDS, warmup_rounds=1)
