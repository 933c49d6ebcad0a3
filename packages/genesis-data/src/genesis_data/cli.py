"""genesis-data: look at, prepare and sample the training data.

    genesis-data stats [--json]                 per translation: language, format, books, verses, tokens
    genesis-data train-tokenizer [--output F]   train (or reuse) the tokenizer and print its path
    genesis-data prepare                        build every cache: parsed verses, tokenizer, token memmap
    genesis-data sample --task T -n N           print N decoded examples of a task

Every command reads --bible-dir DIR (a folder of translation files), --text-file FILE (running text, LM
only) or, with neither, the built-in ASV + KJV + WEB corpus.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from tokenizers import Tokenizer

from genesis_data.blocks import TokenizedCorpus
from genesis_data.corpus import Corpus, default_cache_dir
from genesis_data.readers import BibleFormatError
from genesis_data.sampler import TASKS, MultiTaskSampler
from genesis_data.tokenizer import TOKENIZER_KINDS, load_or_train_tokenizer

CROSS_REFERENCES_NAME = "cross_references.txt"


def _options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_mutually_exclusive_group()
    source.add_argument("--bible-dir", type=Path, help="folder of translation files (default: built-in ASV, KJV, WEB)")
    source.add_argument("--text-file", type=Path, help="one translation as running text (LM task only)")
    common.add_argument("--cache-dir", type=Path, default=None, help=f"caches (default: $GENESIS_CACHE_DIR or {default_cache_dir()})")
    common.add_argument("--tokenizer", choices=TOKENIZER_KINDS, default="bpe", help="tokenizer kind (default: bpe)")
    common.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary size (default: 8192)")

    parser = argparse.ArgumentParser(prog="genesis-data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stats = commands.add_parser("stats", parents=[common], help="table of translations")
    stats.add_argument("--json", action="store_true", help="print a JSON object keyed by translation name")
    train = commands.add_parser("train-tokenizer", parents=[common], help="train or reuse the tokenizer")
    train.add_argument("--output", type=Path, help="also copy tokenizer.json here")
    for name, help_text in (("prepare", "build all caches"), ("sample", "print decoded examples of a task")):
        command = commands.add_parser(name, parents=[common], help=help_text)
        command.add_argument("--cross-references", type=Path, help=f"OpenBible.info file (default: {CROSS_REFERENCES_NAME} "
                             "in or above --bible-dir)")
        command.add_argument("--block-size", type=int, default=256, help="tokens per sequence (default: 256)")
        command.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
        if name == "sample":
            command.add_argument("--task", choices=TASKS, required=True, help="which task's examples to print")
            command.add_argument("-n", type=int, default=4, help="number of examples (default: 4)")
    return parser


def _corpus(args) -> Corpus:
    if args.bible_dir is not None:
        return Corpus.from_bible_dir(args.bible_dir, cache_dir=args.cache_dir)
    if args.text_file is not None:
        return Corpus.from_text_file(args.text_file)
    return Corpus.builtin(cache_dir=args.cache_dir)


def _cross_references(args) -> Path | None:
    if args.cross_references is not None:
        if not args.cross_references.is_file():
            raise FileNotFoundError(f"--cross-references {args.cross_references}: no such file")
        return args.cross_references
    if args.bible_dir is not None:
        for folder in (args.bible_dir, args.bible_dir.parent):
            if (folder / CROSS_REFERENCES_NAME).is_file():
                return folder / CROSS_REFERENCES_NAME
    return None


def _tokenizer_path(args, corpus: Corpus) -> Path:
    return load_or_train_tokenizer(corpus, args.tokenizer, args.vocab_size, args.cache_dir)


def _stats(args) -> None:
    corpus = _corpus(args)
    tokenized = TokenizedCorpus.load_or_build(corpus, _tokenizer_path(args, corpus), args.cache_dir)
    token_offsets = tokenized.offsets[tokenized.translation_starts]
    rows = {
        translation.name: {
            "language": translation.language,
            "format": translation.format,
            "books": len(translation.books),
            "verses": len(translation),
            "tokens": int(token_offsets[index + 1] - token_offsets[index]),
        }
        for index, translation in enumerate(corpus.translations)
    }
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    header = ("translation", "language", "format", "books", "verses", "tokens")
    table = [header] + [(name, r["language"], r["format"], str(r["books"]), f"{r['verses']:,}", f"{r['tokens']:,}") for name, r in rows.items()]
    total_verses = sum(r["verses"] for r in rows.values())
    total_tokens = sum(r["tokens"] for r in rows.values())
    table.append(("total", "", "", "", f"{total_verses:,}", f"{total_tokens:,}"))
    widths = [max(len(row[column]) for row in table) for column in range(len(header))]
    for row in table:
        cells = [cell.ljust(width) if column < 3 else cell.rjust(width) for column, (cell, width) in enumerate(zip(row, widths))]
        print("  ".join(cells))


def _train_tokenizer(args) -> None:
    path = _tokenizer_path(args, _corpus(args))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.output)
        path = args.output
    print(path)


def _sampler(args):
    cross_references = _cross_references(args)  # checked first: a wrong path should not wait for training
    corpus = _corpus(args)
    tokenizer_path = _tokenizer_path(args, corpus)
    sampler = MultiTaskSampler(corpus, tokenizer_path, block_size=args.block_size, batch_size=1, seed=args.seed,
                               cross_references=cross_references, cache_dir=args.cache_dir)
    return corpus, tokenizer_path, sampler


def _prepare(args) -> None:
    corpus, tokenizer_path, sampler = _sampler(args)
    print(f"translations      {len(corpus)} ({sum(len(t) for t in corpus.translations):,} verses)")
    print(f"tokenizer         {tokenizer_path}")
    print(f"token cache       {sampler.tokenized.cache_path} ({len(sampler.tokenized.tokens):,} tokens)")
    print(f"train / val       {len(sampler.train_stream):,} / {len(sampler.val_stream):,} LM tokens")
    print(f"tasks             {', '.join(f'{task} {weight:.3f}' for task, weight in sampler.weights.items())}")


def _sample(args) -> None:
    _, tokenizer_path, sampler = _sampler(args)
    if args.task not in sampler.tasks:
        raise ValueError(f"--task {args.task}: not available for this corpus (see the notice above)")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    draw = getattr(sampler, f"_{args.task}_batch")

    def text(ids, mask=None) -> str:
        ids = ids[mask] if mask is not None else ids[ids != sampler.pad_id]
        return tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    for example in range(1, args.n + 1):
        batch = draw()
        print(f"--- {args.task} example {example}")
        if args.task == "lm":
            print(text(batch["input_ids"][0]))
        elif args.task == "coherence":
            print(f"label {int(batch['labels'][0])} ({'consecutive' if batch['labels'][0] else 'random'})")
            print(text(batch["input_ids"][0], batch["attention_mask"][0]))
        else:
            parts = ("anchor", "positive", "negative") if args.task == "xref" else ("a", "b")
            for part in parts:
                print(f"{part}: {text(batch[f'{part}_ids'][0], batch[f'{part}_mask'][0])}")


COMMANDS = {"stats": _stats, "train-tokenizer": _train_tokenizer, "prepare": _prepare, "sample": _sample}


def main(argv: list[str] | None = None) -> int:
    args = _options().parse_args(argv)
    if getattr(args, "n", 1) < 1:
        print("genesis-data: error: -n must be at least 1", file=sys.stderr)
        return 2
    # Notices (skipped files, tasks switched off) go to stderr, so stdout stays clean for --json.
    notices = logging.StreamHandler(sys.stderr)
    notices.setFormatter(logging.Formatter("genesis-data: %(message)s"))
    package_log = logging.getLogger("genesis_data")
    package_log.addHandler(notices)
    package_log.setLevel(logging.INFO)  # also say when something slow (training, tokenizing) happens once
    try:
        COMMANDS[args.command](args)
    except (BibleFormatError, FileNotFoundError, ValueError) as error:
        print(f"genesis-data: error: {error}", file=sys.stderr)
        return 1
    finally:
        package_log.removeHandler(notices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
