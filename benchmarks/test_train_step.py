"""One training step (forward, cross-entropy, backward, AdamW): genesis-model's GenesisLM against HF transformers'
LlamaForCausalLM of the same width, depth, heads, MLP size, vocabulary and embedding tying, in the same run and
round by round in turn.

Modes: "eager" fp32, "compiled" fp32 (torch.compile of the model; both sides compile), "bf16" (bf16 autocast).
Both sides use the same loss and the same optimizer, so the models are what differs. The fp32 groups also time a
"floor": the step's matrix products and attention alone (see test_train_step_floor)."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from genesis_kernels.dispatch import OPS, prefer
from genesis_model.config import projection_shapes, train_flops_per_token

from benchmarks.workloads import (
    CPU_ONLY,
    CUDA_ONLY,
    DEVICE,
    MODEL_IMPLS,
    TRAIN_SHAPES,
    build_model,
    interleaved_rounds,
    logits_of,
    model_config,
    on_device,
    random_tokens,
    synchronized,
)

# (preset, mode) pairs, each one benchmark group (`train_step_<preset>`, `train_step_<mode>_<preset>`). On a GPU the
# CPU shapes only measure launch overhead; deep_narrow_40 under bf16 is the GPU-sized case.
CASES = [
    pytest.param("tiny", "eager", id="tiny-eager"),
    pytest.param("small", "eager", id="small-eager"),
    pytest.param("tiny", "bf16", id="tiny-bf16"),
    on_device("cpu", "tiny", "compiled", reason=CPU_ONLY),
    on_device("cpu", "small", "compiled", reason=CPU_ONLY),
    on_device("cuda", "deep_narrow_40", "bf16", reason=CUDA_ONLY),
]
# On a GPU the product's step (auto's kernel choice) is also timed with auto set to each kernel backend for every op
# (`dispatch.prefer`), in the same run: the per-op benchmarks alone set auto's Hopper preference, and whole training
# runs on each path disagreed with them (benchmarks/RESULTS.md).
BACKEND_IMPLS = {"genesis-triton": "triton", "genesis-torch": "torch"} if DEVICE.type == "cuda" else {}
# (timed rounds, warmup rounds): a tiny step takes ~0.5 s and a small one ~2 s on the 2-core CPU machine, compiling
# ~40 s (in the first warmup round).
ROUNDS = {"tiny": (8, 1), "small": (4, 1), "deep_narrow_40": (5, 2)}


def group_name(preset: str, mode: str) -> str:
    return f"train_step_{preset}" if mode == "eager" else f"train_step_{mode}_{preset}"


def training_step(impl: str, model, optimizer, tokens: torch.Tensor, mode: str):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    forward = torch.compile(model) if mode == "compiled" else model
    autocast = torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=mode == "bf16")
    # A backend-forced implementation sets auto's choice of every op for its own step only.
    backend = BACKEND_IMPLS.get(impl)

    def step():
        with prefer({op: backend for op in OPS}) if backend else contextlib.nullcontext():
            with autocast:
                logits = logits_of(impl, forward, inputs)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


@pytest.mark.parametrize(("preset", "mode"), CASES)
def test_train_step(benchmark, preset, mode):
    """Every implementation's step, round by round in turn (workloads.interleaved_rounds): a ratio compares rounds
    that ran side by side, and report.py shows the spread of the per-round ratios beside it."""
    shape = TRAIN_SHAPES[preset]
    cfg = model_config(preset)
    tokens = random_tokens(shape.batch_size, shape.seq_len + 1)
    steps = {}
    for impl in [*MODEL_IMPLS, *BACKEND_IMPLS]:
        model = build_model(impl.split("-")[0], cfg).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)  # as genesis-train builds it
        steps[impl] = training_step(impl, model, optimizer, tokens, mode)
    rounds, warmup_rounds = ROUNDS[preset]
    benchmark.group = group_name(preset, mode)
    # The fixture times the whole interleaved measurement once; the rates come from the rounds it records.
    round_seconds = benchmark.pedantic(interleaved_rounds, args=(steps, rounds, warmup_rounds), rounds=1,
                                       iterations=1)
    benchmark.extra_info.update(
        impl="interleaved", round_seconds=round_seconds, preset=preset, mode=mode, batch_size=shape.batch_size,
        seq_len=shape.seq_len, tokens=shape.tokens, flops=train_flops_per_token(cfg, shape.seq_len) * shape.tokens,
    )


FLOOR_SKIPS = "on a GPU the CPU shapes measure launch overhead"


@pytest.mark.parametrize("preset", [on_device("cpu", preset, reason=FLOOR_SKIPS) for preset in ("tiny", "small")])
def test_train_step_floor(benchmark, preset):
    """The products every implementation of the step pays, alone and back to back at GenesisLM's shapes: forward,
    input-gradient and weight-gradient product of each projection and the LM head, and causal SDPA forward and
    backward per layer; no loss, optimizer, norms, activations or copies. Its fraction of the matmul peak bounds
    what any step built on these kernels can reach (weights are shared between layers, which only flatters it)."""
    shape = TRAIN_SHAPES[preset]
    cfg = model_config(preset)
    shapes = projection_shapes(cfg)
    generator = torch.Generator(DEVICE).manual_seed(0)

    def randn(*size):
        return torch.randn(*size, device=DEVICE, generator=generator)

    weights = {(out, in_): randn(out, in_) for out, in_ in set(shapes)}
    inputs = {in_: randn(shape.tokens, in_) for _, in_ in shapes}
    output_grads = {out: randn(shape.tokens, out) for out, _ in shapes}
    heads = (shape.batch_size, cfg.n_heads, shape.seq_len, cfg.head_dim)
    kv_heads = (shape.batch_size, cfg.n_kv_heads, shape.seq_len, cfg.head_dim)
    q = randn(*heads).requires_grad_()
    k, v = randn(*kv_heads).requires_grad_(), randn(*kv_heads).requires_grad_()
    attention_grad = randn(*heads)

    def floor():
        for out, in_ in shapes:
            weight, x, grad = weights[out, in_], inputs[in_], output_grads[out]
            F.linear(x, weight)
            grad @ weight
            grad.t() @ x
        for _ in range(cfg.n_layers):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=cfg.n_kv_heads != cfg.n_heads)
            torch.autograd.grad(y, (q, k, v), attention_grad)

    benchmark.group = group_name(preset, "eager")
    benchmark.extra_info.update(
        impl="floor", preset=preset, mode="eager", batch_size=shape.batch_size, seq_len=shape.seq_len,
        tokens=shape.tokens, flops=train_flops_per_token(cfg, shape.seq_len) * shape.tokens,
    )
    rounds, warmup_rounds = ROUNDS[preset]
    benchmark.pedantic(synchronized(floor), rounds=rounds, warmup_rounds=warmup_rounds)
