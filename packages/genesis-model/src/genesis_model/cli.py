"""`genesis-model presets` (shapes, parameters, memory) and `genesis-generate` (stream text from a checkpoint)."""

from __future__ import annotations

import argparse
import functools
import os
import sys

from .config import (
    GiB,
    PRESETS,
    bytes_human,
    fits_in,
    parameters_human,
    training_memory,
)

GPUS = {"T2000 4GB": 4, "RTX 4070 12GB": 12, "24GB": 24, "80GB": 80}
DTYPES = ("float32", "bfloat16", "float16")


def quiet_when_the_reader_leaves(command):
    """A console entry point that stops without a traceback when its output's reader goes away (`... | head`)."""
    @functools.wraps(command)
    def run(argv: list[str] | None = None) -> int:
        try:
            return command(argv)
        except BrokenPipeError:
            # Python flushes stdout once more at exit: point it at /dev/null so that flush cannot fail as well.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + 13  # what a shell reports for a command stopped by SIGPIPE
    return run


def presets_table(batch_size: int, seq_len: int | None, markdown: bool) -> str:
    """One row per preset; seq_len None means each preset's own max_seq_len."""
    header = ["preset", "layers", "width", "heads", "kv", "mlp", "params", "heads +%", "fp32", "bf16",
              "seq", "w+g+AdamW", "act", "act ckpt", "train", "train ckpt", *GPUS]
    rows = []
    for name, cfg in PRESETS.items():
        seq = seq_len or cfg.max_seq_len
        memory = training_memory(cfg, batch_size, seq)
        params = cfg.num_parameters()
        rows.append([
            name, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_mlp, parameters_human(params),
            f"{100 * cfg.head_parameters() / params:.1f}%", bytes_human(4 * params), bytes_human(2 * params),
            seq, bytes_human(memory.weights + memory.grads + memory.adamw), bytes_human(memory.activations),
            bytes_human(memory.activations_checkpointed), bytes_human(memory.total),
            bytes_human(memory.total_checkpointed),
            *(fits_in(memory, gb * GiB) for gb in GPUS.values()),
        ])
    cells = [header, *[[str(cell) for cell in row] for row in rows]]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in cells]
        lines.insert(1, "|" + "|".join("---" for _ in header) + "|")
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                     for row in cells)


@quiet_when_the_reader_leaves
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genesis-model", description="Genesis model utilities.")
    commands = parser.add_subparsers(dest="command", required=True)
    presets = commands.add_parser("presets", help="shapes, parameter counts and memory of every preset")
    presets.add_argument("--batch-size", type=int, default=8, help="batch for the activation estimate (default 8)")
    presets.add_argument("--seq-len", type=int, default=None,
                         help="sequence length for the activation estimate (default: each preset's max_seq_len)")
    presets.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args(argv)
    if args.batch_size < 1 or (args.seq_len is not None and args.seq_len < 1):
        parser.error("--batch-size and --seq-len must be positive")
    print(presets_table(args.batch_size, args.seq_len, args.markdown))
    print(f"\nparams: GenesisLM with tied embeddings, vocab {PRESETS['tiny'].vocab_size}; heads +%: what "
          f"MultiTaskModel adds. Training memory: fp32 weights + grads + AdamW (16 B/param, heads included) and "
          f"bf16-autocast activations at batch {args.batch_size} x seq; 'ckpt' = gradient checkpointing. GPU "
          f"columns: fits as is (yes), only with checkpointing (ckpt), or not (no), leaving 1 GiB for CUDA. "
          f"'no' on one GPU: genesis-train --fsdp over N of them holds w+g+AdamW / N on each (plus the "
          f"activations).")
    return 0


@quiet_when_the_reader_leaves
def generate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="genesis-generate", description="Stream text from a checkpoint.")
    parser.add_argument("--checkpoint", required=True, help="directory with config.json, model.safetensors, "
                                                              "tokenizer.json")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decode step once (a CUDA graph on a GPU, Inductor's C++ wrapper on a CPU): "
                             "costs seconds to minutes up front, then each token is cheaper")
    args = parser.parse_args(argv)

    import torch

    from .checkpoint import CheckpointError, load_pretrained
    from .generate import check_generation_options, generate
    from .tokenizer import GenesisTokenizer

    def fail(message: str) -> None:
        """A mistake in the options or the checkpoint: one line on stderr and exit status 2, like argparse's own."""
        print(f"genesis-generate: error: {message}", file=sys.stderr)
        sys.exit(2)

    try:
        check_generation_options(args.temperature, args.top_k, args.top_p, args.max_new_tokens)
    except ValueError as error:
        name, problem = str(error).removeprefix("generate: ").split(" ", 1)  # "top_k must be ..." names --top-k
        fail(f"--{name.replace('_', '-')} {problem}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            fail(f"--device {device}: no CUDA device is available (use --device cpu)")
        model = load_pretrained(args.checkpoint, device=device, dtype=getattr(torch, args.dtype))
        tokenizer = GenesisTokenizer.from_pretrained(args.checkpoint)
    except (CheckpointError, FileNotFoundError, ValueError) as error:
        fail(str(error))
    except RuntimeError as error:  # e.g. an unknown or unavailable --device
        fail(f"--device {device}: {str(error).splitlines()[0]}")

    prompt_ids = tokenizer.encode(args.prompt)
    stream = tokenizer.stream(context=prompt_ids)
    sys.stdout.write(args.prompt)
    sys.stdout.flush()

    def show(row: int, token: int) -> None:
        sys.stdout.write(stream.push(token))
        sys.stdout.flush()

    stop = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    try:
        generate(model, [prompt_ids], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                 top_p=args.top_p, seed=args.seed, stop_tokens=stop, pad_id=tokenizer.pad_id or 0, on_token=show,
                 compile=args.compile)
    except ValueError as error:  # e.g. prompt + max new tokens longer than the model's context
        sys.stdout.write("\n")
        fail(str(error).removeprefix("generate: "))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
