"""``genesis-kernels verify`` (every available backend against float64) and ``genesis-kernels bench``."""

from __future__ import annotations

import argparse
import sys

import torch

from . import bench, verify
from .dispatch import available_backends

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"genesis-kernels: --device {name}: no CUDA device is available")
    return device


def _backends(device: torch.device, requested: str) -> list[str]:
    available = available_backends(device)
    if requested == "all":
        return available
    if requested not in available:
        raise SystemExit(f"genesis-kernels: --backend {requested} is not available on {device} "
                         f"(available: {', '.join(available)})")
    return [requested]


def _dtypes(names: str | None) -> list[torch.dtype]:
    if names is None:
        names = "fp32,fp16,bf16"
    dtypes = []
    for name in names.split(","):
        if name not in DTYPES:
            raise SystemExit(f"genesis-kernels: --dtypes: {name!r} is not one of {', '.join(DTYPES)}")
        dtypes.append(DTYPES[name])
    return dtypes


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if any(value <= 0 for value in values):
        raise argparse.ArgumentTypeError(f"{text!r}: lengths must be positive")
    return values


def _verify(args: argparse.Namespace) -> int:
    device = _device(args.device)
    return verify.run(device, _backends(device, args.backend), _dtypes(args.dtypes))


def _bench(args: argparse.Namespace) -> int:
    return bench.run(_device(args.device), DTYPES[args.dtype] if args.dtype else None, seq_lens=args.seq_lens,
                     tokens=args.tokens, heads=args.heads, head_dim=args.head_dim, causal=not args.no_causal,
                     swiglu_width=args.swiglu_width, norm_width=args.norm_width, reps=args.reps)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesis-kernels", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify_cmd = commands.add_parser("verify", help="check every available backend against float64")
    verify_cmd.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    verify_cmd.add_argument("--backend", default="all", choices=["all", "triton", "torch"])
    verify_cmd.add_argument("--dtypes", help="comma-separated: fp32,fp16,bf16 (default: all three)")
    verify_cmd.set_defaults(run=_verify)

    bench_cmd = commands.add_parser("bench", help="time backends against SDPA and naive attention")
    bench_cmd.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda if available)")
    bench_cmd.add_argument("--dtype", choices=list(DTYPES), help="default: bf16 on CUDA, fp32 on the CPU")
    bench_cmd.add_argument("--seq-lens", type=_int_list,
                           help="comma-separated (default: 512,...,8192 on CUDA, 128,256,512 on the CPU)")
    bench_cmd.add_argument("--tokens", type=int,
                           help="tokens per batch, batch = tokens / seq (default: 16384 on CUDA, 2048 on the CPU)")
    bench_cmd.add_argument("--heads", type=int, default=16)
    bench_cmd.add_argument("--head-dim", type=int, default=64)
    bench_cmd.add_argument("--no-causal", action="store_true")
    bench_cmd.add_argument("--swiglu-width", type=int, default=2048)
    bench_cmd.add_argument("--norm-width", type=int, default=768)
    bench_cmd.add_argument("--reps", type=int, default=20)
    bench_cmd.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
