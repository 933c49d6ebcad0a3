"""Where a compiled batch-1 decoding token's time goes, and what other formulations of the step would cost: a
diagnostic for the GPU decoding target, run by gpu.sh after the decode benchmarks (test_decode.py measures the
tokens/s of the real model against HF; this says why, and what to change next).

Each variant runs `generate(..., compile=True)` (the benchmark's 32-token prompt, 128 new tokens) on a slice of
the preset: its width and heads with `--layers` layers, so that every variant's compile takes seconds, not the
minute deep_narrow_40's 40 layers take (a token's kernels repeat per layer, so per-layer costs carry over). Per
variant: tokens/s, and from the profiler the kernels and summed kernel time per token (kernel time well under
the wall time per token means the host or launch gaps bound it), every kernel's launches and time, and for how many
tokens its greedy output agrees with the product's eager `generate` (bf16 rounding that differs between
formulations can flip a near-tie of an untrained model's logits, so this is reported, not asserted).

Variants: `benchmarks/tuning/decode_variants.py` (the product first, then the formulations it selects).

`--eager` profiles `generate(...)` without compiling instead, and adds the host's side: the ops that took the most
host time per token (self time, by name) and the host time of all ops per token. Eager batch-1 decoding is bound by
the host, on a GPU (deep_narrow_40 at 0.86x HF's eager `generate` on an H200) as on a CPU.

    python benchmarks/tuning/decode_profile.py [--preset deep_narrow_40] [--layers 8] [--dtype bfloat16] [--eager]
                                               [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from genesis_model import GenesisLM, generate
from torch.profiler import ProfilerActivity, profile

# Run as a script: the repository root on sys.path for `import benchmarks`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.tuning.decode_variants import CUDA_ONLY_VARIANTS, VARIANTS, patched  # noqa: E402
from benchmarks.workloads import (  # noqa: E402
    DECODE_NEW_TOKENS, DECODE_PROMPT_TOKENS, DEVICE, model_config, random_tokens)

ON_CUDA = DEVICE.type == "cuda"
def sync():
    if ON_CUDA:
        torch.cuda.synchronize()


def agreement(tokens: list[int], expected: list[int]) -> int:
    """How many leading tokens two greedy outputs share."""
    return next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))


def kernel_summary(prof, tokens: int) -> dict:
    """Kernels per token, their summed time per token (us), and every kernel by name: [launches per token, us per
    token], the costliest first (which kernels a layer still launches is what the next fusion is chosen from)."""
    kernels = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
    total, launches = Counter(), Counter()
    for event in kernels:
        total[event.name[:70]] += event.device_time
        launches[event.name[:70]] += 1
    return {
        "kernels_per_token": round(len(kernels) / tokens, 1),
        "kernel_us_per_token": round(sum(total.values()) / tokens, 1),
        "kernels": {name: [round(launches[name] / tokens, 2), round(us / tokens, 1)]
                    for name, us in total.most_common()},
    }


def host_summary(prof, tokens: int, top: int = 15) -> dict:
    """Host time of every op per token (us, self time, so nested ops are not counted twice) and the `top` ops that
    took the most of it: [calls per token, us per token]."""
    ops = [op for op in prof.key_averages() if op.self_cpu_time_total > 0]
    ops.sort(key=lambda op: op.self_cpu_time_total, reverse=True)
    return {
        "host_ops_per_token": round(sum(op.count for op in ops) / tokens, 1),
        "host_us_per_token": round(sum(op.self_cpu_time_total for op in ops) / tokens, 1),
        "host_ops": {op.key[:70]: [round(op.count / tokens, 2), round(op.self_cpu_time_total / tokens, 1)]
                     for op in ops[:top]},
    }


def measure(lm: GenesisLM, prompt: list[int], expected: list[int], compile: bool = True) -> dict:
    start = time.perf_counter()
    (tokens,) = generate(lm, [prompt], DECODE_NEW_TOKENS, compile=compile)
    sync()
    first_call_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        generate(lm, [prompt], DECODE_NEW_TOKENS, compile=compile)
        sync()
        times.append(time.perf_counter() - start)
    row = {"tokens_per_s": round(DECODE_NEW_TOKENS / min(times), 1), "first_call_s": round(first_call_s, 1),
           "agrees_with_eager": agreement(tokens, expected)}
    if ON_CUDA or not compile:
        activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if ON_CUDA else [ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            generate(lm, [prompt], DECODE_NEW_TOKENS, compile=compile)
            sync()
        if ON_CUDA:
            row.update(kernel_summary(prof, DECODE_NEW_TOKENS))
        if not compile:
            row.update(host_summary(prof, DECODE_NEW_TOKENS))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="deep_narrow_40" if ON_CUDA else "tiny")
    parser.add_argument("--layers", type=int, default=8, help="layers of the slice (default 8)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    default_variants = [name for name in VARIANTS if ON_CUDA or name not in CUDA_ONLY_VARIANTS]
    parser.add_argument("--variants", default=",".join(default_variants),
                        help=f"comma-separated, in order (default: {', '.join(default_variants)})")
    parser.add_argument("--eager", action="store_true", help="profile generate() without compiling, with host time")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown:
        parser.error(f"--variants: {', '.join(map(repr, unknown))} not among {', '.join(VARIANTS)}")

    torch.manual_seed(0)
    config = dataclasses.replace(model_config(args.preset), n_layers=args.layers)
    lm = GenesisLM(config).to(DEVICE, getattr(torch, args.dtype)).eval()
    prompt = random_tokens(1, DECODE_PROMPT_TOKENS)[0].tolist()
    (expected,) = generate(lm, [prompt], DECODE_NEW_TOKENS)
    print(f"decode profile ({'eager' if args.eager else 'compiled'}): {args.preset} with {args.layers} layers, "
          f"{args.dtype} on {DEVICE}, {DECODE_PROMPT_TOKENS}-token prompt, {DECODE_NEW_TOKENS} new tokens, "
          f"torch {torch.__version__}")
    rows = {}
    for name in args.variants.split(","):
        try:
            with patched(**VARIANTS[name]):
                rows[name] = measure(lm, prompt, expected, compile=not args.eager)
        except Exception as error:  # one failed variant should not hide the others' numbers
            rows[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
        print(name, json.dumps(rows[name]), flush=True)
        if args.json:  # after every variant: a run cut short keeps what it measured
            args.json.write_text(json.dumps({"preset": args.preset, "layers": args.layers, "dtype": args.dtype,
                                             "eager": args.eager, "rows": rows}, indent=1))
    return 0 if all("error" not in row for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
