"""Tokenize-once storage and LM blocks.

Every verse of the corpus is encoded once (``encode_verses``) into one flat token array plus offsets, saved
as ``.npy`` files and opened as memmaps. The cache folder is named by a hash of the corpus content and the
tokenizer file, so changing either builds a new cache and never reads a stale one.

The validation split holds out whole chapters, the same chapters in every translation (so a held-out
chapter's text is not trained on in a near-identical translation either). Whether a chapter is held out
depends only on its reference and the split seed, not on which translations are loaded. Unaligned running
text is split the same way by sections of ``LINES_PER_SECTION`` lines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from genesis_data.corpus import Corpus, default_cache_dir
from genesis_data.progress import track
from genesis_data.tokenizer import encode_verses, file_fingerprint

log = logging.getLogger(__name__)

# Bump when the cached layout or the encoding of verses changes.
CACHE_VERSION = "1"
LINES_PER_SECTION = 40
IGNORE_INDEX = -100  # label of positions without a target (torch.nn.functional.cross_entropy's default)


@dataclass
class TokenizedCorpus:
    """All verses of a corpus as tokens: verse i of the corpus (translations in order, verses in file order)
    is ``tokens[offsets[i]:offsets[i + 1]]``."""

    tokens: np.ndarray  # memmap, uint16 or uint32
    offsets: np.ndarray  # int64, n_verses + 1
    keys: np.ndarray  # int64 verse keys (line numbers for unaligned text)
    translation_starts: np.ndarray  # int64, n_translations + 1: verse index where each translation starts
    cache_path: Path

    @classmethod
    def load_or_build(cls, corpus: Corpus, tokenizer_path: str | Path, cache_dir: str | Path | None = None) -> TokenizedCorpus:
        digest = hashlib.blake2b(f"{CACHE_VERSION}\0{corpus.fingerprint}\0".encode(), digest_size=16)
        digest.update(file_fingerprint(tokenizer_path).encode())
        path = Path(cache_dir or default_cache_dir()) / "tokens" / digest.hexdigest()
        if not (path / "offsets.npy").is_file():
            _build_cache(corpus, Tokenizer.from_file(str(tokenizer_path)), path)
        lengths = [len(translation) for translation in corpus.translations]
        translation_starts = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=translation_starts[1:])
        return cls(
            tokens=np.load(path / "tokens.npy", mmap_mode="r"),
            offsets=np.load(path / "offsets.npy"),
            keys=np.concatenate([translation.keys for translation in corpus.translations]),
            translation_starts=translation_starts,
            cache_path=path,
        )

    @property
    def verse_lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def translation_of(self, verse: int) -> int:
        return int(np.searchsorted(self.translation_starts, verse, side="right") - 1)

    def verse_tokens(self, first: int, stop: int | None = None) -> np.ndarray:
        """Tokens of verses ``first`` up to ``stop`` (exclusive; one verse when None), contiguous in the cache."""
        return self.tokens[self.offsets[first] : self.offsets[first + 1 if stop is None else stop]]


def _build_cache(corpus: Corpus, tokenizer: Tokenizer, path: Path) -> None:
    log.info("tokenizing %d translations (once; cached in %s)", len(corpus), path)
    # Built in a private folder and renamed into place, so a concurrent reader never sees half a cache.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    token_parts, length_parts = [], []
    for translation in track(corpus.translations, "tokenizing the corpus", unit="translations"):
        tokens, offsets = encode_verses(tokenizer, translation.texts)
        token_parts.append(tokens)
        length_parts.append(np.diff(offsets))
    tokens = np.concatenate(token_parts)
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(length_parts))])
    np.save(tmp / "tokens.npy", tokens)
    np.save(tmp / "offsets.npy", offsets.astype(np.int64))
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same cache first
        shutil.rmtree(tmp, ignore_errors=True)


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a well-spread, platform-independent hash of each uint64."""
    z = values.astype(np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def held_out_verses(corpus: Corpus, keys: np.ndarray, val_fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask over the corpus's verses: True for verses in validation chapters (sections of running text)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction}: expected a number in [0, 1)")
    aligned = np.concatenate([np.full(len(t), t.aligned) for t in corpus.translations])
    units = np.where(aligned, keys // 1_000, keys // LINES_PER_SECTION + (1 << 40))
    with np.errstate(over="ignore"):
        scores = _mix64(units.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15))
    threshold = np.uint64(int(val_fraction * 2.0**64))
    held_out = scores < threshold
    distinct_units = np.unique(units)
    if val_fraction > 0 and not held_out.any() and len(distinct_units) > 1:
        # A corpus too small for the fraction still gets one validation chapter: the lowest-scoring one.
        held_out = units == units[np.argmin(scores)]
    return held_out


def lm_stream(tokenized: TokenizedCorpus, verses: np.ndarray, eos_id: int) -> np.ndarray:
    """Running text of the selected verses (boolean mask), each translation followed by ``eos_id``."""
    token_mask = np.repeat(verses, tokenized.verse_lengths)
    selected = np.asarray(tokenized.tokens)[token_mask]
    selected_per_verse = np.where(verses, tokenized.verse_lengths, 0)
    cumulative = np.concatenate([[0], np.cumsum(selected_per_verse)])
    translation_ends = cumulative[tokenized.translation_starts[1:]]
    return np.insert(selected, translation_ends, eos_id).astype(selected.dtype)


def lm_batch(stream: np.ndarray, starts: np.ndarray, block_size: int, pad_id: int) -> dict:
    """LM batch of blocks of ``block_size + 1`` tokens from ``starts``: labels are the inputs shifted by one;
    a block that runs past the end of a short stream is right-padded, with no target there."""
    window = starts[:, None] + np.arange(block_size + 1)
    in_range = window < len(stream)
    blocks = np.where(in_range, stream[np.minimum(window, len(stream) - 1)], pad_id).astype(np.int64)
    labels = np.where(in_range[:, 1:], blocks[:, 1:], IGNORE_INDEX)
    return {"task": "lm", "input_ids": torch.from_numpy(blocks[:, :-1]), "labels": torch.from_numpy(labels)}


def random_block_starts(rng: np.random.Generator, stream_length: int, block_size: int, count: int) -> np.ndarray:
    return rng.integers(0, max(stream_length - block_size, 1), size=count)


def spread_block_starts(stream_length: int, block_size: int, count: int) -> np.ndarray:
    """``count`` block starts spread evenly over the stream (deterministic; used for validation)."""
    return np.linspace(0, max(stream_length - block_size - 1, 0), count).round().astype(np.int64)
