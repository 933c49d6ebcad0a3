"""Launch configs of genesis_kernels' decoding kernels on a preset's decoding shapes, timed the way a compiled
decode step runs them: a CUDA graph of back-to-back calls, each on its own weights or cache (so that, as in the
model, they come from memory, not L2). The one-row projections (`TILE_ELEMENTS` / `NUM_WARPS` / `MIN_PROGRAMS`)
beside cuBLAS (F.linear) in the same graph form; the attention step (`BLOCK_SLOTS` / `NUM_WARPS`) at two fills of
the 256-slot cache the benchmark's generation uses. A diagnostic for the GPU decoding target: it says which configs
to ship.

    python benchmarks/tuning/decode_kernel_configs.py [--preset deep_narrow_40] [--calls 40] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from genesis_kernels.kernels import decode_attention as attention_module
from genesis_kernels.kernels import matvec as matvec_module

# Run as a script: the repository root on sys.path for `import benchmarks`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.workloads import model_config  # noqa: E402

TILES = (4096, 8192, 16384)
WARPS = (4, 8)
MIN_PROGRAMS = (128, 264)
BLOCK_SLOTS = (32, 64, 128, 256)
ATTENTION_WARPS = (2, 4, 8)
CACHE_SLOTS = 256


def shapes(preset: str) -> dict[str, tuple[int, int, str]]:
    """name -> (rows, cols, prologue) of a decode step's projections."""
    cfg = model_config(preset)
    return {
        "qkv": (cfg.d_model + 2 * cfg.kv_dim, cfg.d_model, "plain"),
        "out": (cfg.d_model, cfg.d_model, "plain"),
        "gate_up+norm": (2 * cfg.d_mlp, cfg.d_model, "norm"),
        "down+swiglu": (cfg.d_model, cfg.d_mlp, "gated"),
        "lm_head": (cfg.vocab_size, cfg.d_model, "plain"),
    }


def graph_us_per_call(calls: list, replays: int = 20) -> float:
    """Mean device time of one call when `calls` run back to back as one CUDA graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for call in calls:  # warm up (compiles) outside the capture
            call()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for call in calls:
            call()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (replays * len(calls))


def calls_for(rows: int, cols: int, prologue: str, n: int, provider: str) -> list:
    dtype, device = torch.bfloat16, "cuda"
    width = 2 * cols if prologue == "gated" else cols
    x = torch.randn(1, width, dtype=dtype, device=device)
    fx, norm_weight = torch.randn(1, cols, dtype=dtype, device=device), torch.ones(cols, dtype=dtype, device=device)
    weights = [torch.randn(rows, cols, dtype=dtype, device=device) for _ in range(n)]
    if provider == "cublas":
        if prologue == "gated":
            return [lambda w=w: F.linear(F.silu(x[:, :cols]) * x[:, cols:], w) for w in weights]
        if prologue == "norm":
            return [lambda w=w: F.linear(F.rms_norm(2 * x + fx, (cols,), norm_weight), w) for w in weights]
        return [lambda w=w: F.linear(x, w) for w in weights]
    if prologue == "norm":
        return [lambda w=w: matvec_module.residual_norm_matvec_triton(x, fx, norm_weight, w, 2.0) for w in weights]
    return [lambda w=w: matvec_module.matvec_triton(x, w, gated=prologue == "gated") for w in weights]


def attention_calls(slot: int, n: int, preset: str) -> list:
    """n attention steps of one token, each over its own (1, K, 256, D) cache, the token written at `slot`."""
    cfg = model_config(preset)
    dtype, device = torch.bfloat16, "cuda"
    qkv = torch.randn(1, 1, cfg.n_heads + 2 * cfg.n_kv_heads, cfg.head_dim, dtype=dtype, device=device)
    angles = torch.rand(1, 1, cfg.head_dim // 2, device=device)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([-angles.sin(), angles.sin()], -1)
    mask = (torch.arange(CACHE_SLOTS, device=device) <= slot)[None, None]
    slots = torch.tensor([slot], device=device)
    caches = [torch.randn(2, 1, cfg.n_kv_heads, CACHE_SLOTS, cfg.head_dim, dtype=dtype, device=device)
              for _ in range(n)]
    return [lambda c=c: attention_module.decode_attention_triton(qkv, cos, sin, c[0], c[1], mask, slots)
            for c in caches]


def sweep(module, names: tuple[str, ...], configs, make_calls, row: dict) -> tuple[str, float]:
    """Time `make_calls()` under each config (values for `module`'s constants `names`) into `row`, the module's
    constants restored after; returns the fastest config and its us a call."""
    shipped = tuple(getattr(module, name) for name in names)
    keys = []
    try:
        for config in configs:
            key = "/".join(map(str, config))
            keys.append(key)
            for name, value in zip(names, config):
                setattr(module, name, value)
            try:
                row[key] = round(graph_us_per_call(make_calls()), 2)
            except Exception as error:  # a config the GPU cannot launch: say so, go on
                row[key] = f"{type(error).__name__}: {str(error)[:120]}"
    finally:
        for name, value in zip(names, shipped):
            setattr(module, name, value)
        torch.cuda.empty_cache()
    timed = {key: row[key] for key in keys if isinstance(row[key], float)}
    best = min(timed, key=timed.get)
    return best, timed[best]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="deep_narrow_40")
    parser.add_argument("--calls", type=int, default=40, help="calls per graph, each on its own weights or cache")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("decode_kernel_configs: needs a CUDA GPU")
        return 0
    results = {}
    names = ("BLOCK_SLOTS", "NUM_WARPS")
    print(f"decode_attention configs on {torch.cuda.get_device_name()}, {args.preset}, bf16, {args.calls * 3} calls a "
          f"graph (the caches outgrow L2); shipped {'/'.join(names)} = "
          f"{'/'.join(str(getattr(attention_module, name)) for name in names)}")
    for slot in (96, 160):
        row = results[f"attention slot {slot}"] = {}
        best, us = sweep(attention_module, names, itertools.product(BLOCK_SLOTS, ATTENTION_WARPS),
                         lambda: attention_calls(slot, args.calls * 3, args.preset), row)
        print(f"attention, slot {slot} of {CACHE_SLOTS}: best {best} {us} us; "
              + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)

    print(f"matvec configs, {args.calls} calls a graph")
    for name, (rows, cols, prologue) in shapes(args.preset).items():
        # The norm prologue launches with its own constants.
        names = ("NORM_TILE_ELEMENTS", "NORM_NUM_WARPS", "MIN_PROGRAMS") if prologue == "norm" \
            else ("TILE_ELEMENTS", "NUM_WARPS", "MIN_PROGRAMS")
        megabytes = rows * cols * 2 / 1e6
        row = results[name] = {
            "cublas": round(graph_us_per_call(calls_for(rows, cols, prologue, args.calls, "cublas")), 2),
            "shipped": "/".join(str(getattr(matvec_module, constant)) for constant in names)}
        best, us = sweep(matvec_module, names, itertools.product(TILES, WARPS, MIN_PROGRAMS),
                         lambda: calls_for(rows, cols, prologue, args.calls, "triton"), row)
        print(f"{name} ({rows}x{cols}, {prologue}, {megabytes:.1f} MB): best {best} {us} us "
              f"({megabytes / us:.2f} TB/s); " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
