"""Where a batch-1 decoding token's time goes: a diagnostic for issue 5's GPU target, run by gpu.sh after the
decode benchmarks (test_decode.py measures the tokens/s; this says why).

On a GPU, for deep_narrow_40 in bf16 (the benchmark's 32-token prompt and 128 new tokens):
- "compiled generate": `generate(..., compile=True)` as the benchmark runs it: tokens/s, and from the profiler
  the kernels and the summed kernel time per token. Kernel time well under the wall time per token means the
  host (Python, guards, graph launch) bounds it, not the GPU;
- "graph: <backend>": the eager decode step captured by hand in one torch.cuda.CUDAGraph and replayed back to
  back (the next token copied into the graph's input each time), with the kernels' Triton backend and with the
  torch one: what one CUDA graph of the eager step costs, without Inductor and without the generate loop.
Each row also says for how many tokens its greedy output agrees with eager `generate` (bf16 rounding that differs
between kernels can flip a near-tie of an untrained model's logits, so this is reported, not asserted).

    python benchmarks/decode_profile.py [--preset deep_narrow_40] [--dtype bfloat16] [--json FILE]

On a CPU only the compiled-generate row runs (no CUDA graphs), which is enough to smoke-test the script.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from genesis_kernels.dispatch import BACKEND_ENV
from genesis_model import GenesisLM, KVCache, generate
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.workloads import DECODE_NEW_TOKENS, DECODE_PROMPT_TOKENS, DEVICE, model_config, random_tokens  # noqa: E402

ON_CUDA = DEVICE.type == "cuda"


def sync():
    if ON_CUDA:
        torch.cuda.synchronize()


def agreement(tokens: list[int], expected: list[int]) -> int:
    """How many leading tokens two greedy outputs share."""
    return next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), min(len(tokens), len(expected)))


def kernel_summary(prof, tokens: int) -> dict:
    """Kernels per token, their summed time per token (us), and the five that take the most time."""
    kernels = [event for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA]
    total = Counter()
    for event in kernels:
        total[event.name[:70]] += event.device_time
    return {
        "kernels_per_token": len(kernels) / tokens,
        "kernel_us_per_token": sum(total.values()) / tokens,
        "top_kernels_us_per_token": {name: round(us / tokens, 1) for name, us in total.most_common(5)},
    }


def compiled_generate(lm: GenesisLM, prompt: list[int], expected: list[int]) -> dict:
    start = time.perf_counter()
    (tokens,) = generate(lm, [prompt], DECODE_NEW_TOKENS, compile=True)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(3):
        start = time.perf_counter()
        generate(lm, [prompt], DECODE_NEW_TOKENS, compile=True)
        sync()
        times.append(time.perf_counter() - start)
    row = {"tokens_per_s": DECODE_NEW_TOKENS / min(times), "first_call_s": compile_s,
           "agrees_with_eager": agreement(tokens, expected)}
    if ON_CUDA:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            generate(lm, [prompt], DECODE_NEW_TOKENS, compile=True)
            sync()
        row.update(kernel_summary(prof, DECODE_NEW_TOKENS))
    return row


def captured_step(lm: GenesisLM, prompt: list[int], expected: list[int], backend: str) -> dict:
    """The eager step in one hand-captured CUDA graph, replayed DECODE_NEW_TOKENS - 1 times after the prompt."""
    os.environ[BACKEND_ENV] = backend
    try:
        cache = KVCache(lm.config, 1, 256, device=DEVICE, dtype=lm.embed.weight.dtype)
        token = torch.zeros(1, 1, dtype=torch.long, device=DEVICE)

        def step():
            return lm.logits(lm.hidden_states(token, cache)[:, -1]).argmax(-1)

        def prefill():
            cache.reset()
            return lm.logits(lm.hidden_states(torch.tensor([prompt], device=DEVICE), cache)[:, -1]).argmax(-1)

        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # compiles the Triton kernels and settles the allocator before capture
                for _ in range(3):
                    step()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                best = step()

            def decode():
                token.copy_(prefill()[:, None])
                out = [token]
                for _ in range(DECODE_NEW_TOKENS - 1):
                    graph.replay()
                    token.copy_(best[:, None])
                    out.append(token.clone())
                return torch.cat(out, 1)[0].tolist()

            agrees = agreement(decode(), expected)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                decode()
                sync()
                times.append(time.perf_counter() - start)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                step()
                sync()
        return {"tokens_per_s": DECODE_NEW_TOKENS / min(times), "agrees_with_eager": agrees,
                **kernel_summary(prof, 1)}
    finally:
        os.environ.pop(BACKEND_ENV, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="deep_narrow_40" if ON_CUDA else "tiny")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args()

    torch.manual_seed(0)
    lm = GenesisLM(model_config(args.preset)).to(DEVICE, getattr(torch, args.dtype)).eval()
    prompt = random_tokens(1, DECODE_PROMPT_TOKENS)[0].tolist()
    (expected,) = generate(lm, [prompt], DECODE_NEW_TOKENS)
    print(f"decode profile: {args.preset} {args.dtype} on {DEVICE}, {DECODE_PROMPT_TOKENS}-token prompt, "
          f"{DECODE_NEW_TOKENS} new tokens, torch {torch.__version__}")
    runs = {"compiled generate": lambda: compiled_generate(lm, prompt, expected)}
    if ON_CUDA:
        for backend in ("triton", "torch"):
            runs[f"graph: {backend}"] = lambda backend=backend: captured_step(lm, prompt, expected, backend)
    rows = {}
    for name, run in runs.items():
        try:
            rows[name] = run()
        except Exception as error:  # one failed variant should not hide the others' numbers
            rows[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
        print(name, json.dumps(rows[name], indent=1), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "dtype": args.dtype, "rows": rows}, indent=1))
    return 0 if all("error" not in row for row in rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
