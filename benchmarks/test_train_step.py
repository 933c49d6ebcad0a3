"""One training step (forward, cross-entropy, backward, AdamW): genesis-model's GenesisLM against HF transformers'
LlamaForCausalLM of the same width, depth, heads, MLP size, vocabulary and embedding tying, in the same run.

Modes: "eager" fp32, "compiled" fp32 (torch.compile of the model; both sides compile), "bf16" (bf16 autocast).
Both sides use the same loss and the same optimizer, so the models are what differs."""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.workloads import (
    CPU_ONLY,
    CUDA_ONLY,
    DEVICE,
    MODEL_IMPLS,
    ON_CUDA,
    TRAIN_SHAPES,
    build_model,
    logits_of,
    model_config,
    on_device,
    random_tokens,
    synchronized,
    train_flops_per_token,
)

# (preset, mode) pairs, each one benchmark group (`train_step_<preset>`, `train_step_<mode>_<preset>`). On a GPU the
# CPU shapes only measure launch overhead; deep_narrow_40 under bf16 is issue 7's GPU case.
CASES = [
    pytest.param("tiny", "eager", id="tiny-eager"),
    pytest.param("small", "eager", id="small-eager"),
    pytest.param("tiny", "bf16", id="tiny-bf16"),
    on_device("cpu", "tiny", "compiled", reason=CPU_ONLY),
    on_device("cpu", "small", "compiled", reason=CPU_ONLY),
    on_device("cuda", "deep_narrow_40", "bf16", reason=CUDA_ONLY),
]
# (timed rounds, warmup rounds): a tiny step takes ~0.5 s and a small one ~2 s on the 2-core CPU machine, compiling
# ~40 s (in the first warmup round). Rates use the fastest round, so more rounds mean less exposure to other load.
ROUNDS = {"tiny": (8, 1), "small": (4, 1), "deep_narrow_40": (5, 2)}


def group_name(preset: str, mode: str) -> str:
    return f"train_step_{preset}" if mode == "eager" else f"train_step_{mode}_{preset}"


def training_step(impl: str, model, optimizer, tokens: torch.Tensor, mode: str):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    forward = torch.compile(model) if mode == "compiled" else model
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=mode == "bf16")

    def step():
        with autocast:
            logits = logits_of(impl, forward, inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize("impl", MODEL_IMPLS)  # varies fastest: a group's tests run back to back
@pytest.mark.parametrize(("preset", "mode"), CASES)
def test_train_step(benchmark, preset, mode, impl):
    shape = TRAIN_SHAPES[preset]
    cfg = model_config(preset)
    model = build_model(impl, cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=ON_CUDA)  # as genesis-train builds it
    tokens = random_tokens(shape.batch_size, shape.seq_len + 1)
    benchmark.group = group_name(preset, mode)
    benchmark.extra_info.update(
        impl=impl, preset=preset, mode=mode, batch_size=shape.batch_size, seq_len=shape.seq_len,
        tokens=shape.tokens, flops=train_flops_per_token(cfg, shape.seq_len) * shape.tokens,
    )
    rounds, warmup_rounds = ROUNDS[preset]
    benchmark.pedantic(synchronized(training_step(impl, model, optimizer, tokens, mode)),
                       rounds=rounds, warmup_rounds=warmup_rounds)
