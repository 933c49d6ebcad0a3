"""Tokenizers: byte-level BPE (the default) or characters, both saved as one HF ``tokenizer.json``.

The file loads with ``tokenizers.Tokenizer.from_file`` alone, so genesis-model needs no genesis-data code at
inference. Both kinds share:

* special tokens (``ADDED_SPECIAL_TOKENS``: the roles of ``SPECIAL_TOKENS``, ``<|pad|>`` is id 0, then four
  reserved ids), skipped by ``decode``;
* ``ATOMIC_WORDS``: "Jehovah" is one token, never split, wherever it stands ("Jehovah,", "(Jehovah)",
  "Jehovah's", line start, inside "Jehovah-jireh"). It is an added token, matched before pre-tokenization,
  so the space before it is its own token rather than part of a "ĠJehovah" merge. Case matters: the
  all-capitals "JEHOVAH" (KJV's "JEHOVAH is my banner" and three more) is a second atomic token, because
  upper-casing is part of the text and decoding must give it back;
* exact round trips: ``decode(encode(text).ids) == text`` for any text (bytes for BPE, byte fallback for
  characters outside the character vocabulary).

Verses are encoded with a leading space, as they stand in running text, so a stream of verses decodes to
" verse one verse two ...".
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from genesis_data.progress import terminal_bars, track

if TYPE_CHECKING:
    from genesis_data.corpus import Corpus

SPECIAL_TOKENS: dict[str, str] = {
    "pad": "<|pad|>",
    "bos": "<|bos|>",
    "eos": "<|eos|>",
    "sep": "<|sep|>",
    "unk": "<|unk|>",
}
# Ids 5-8 are reserved: no batch holds them. They keep the ids of every tokenizer and checkpoint already written
# (removing them would renumber every token after them) and leave room for control tokens without renumbering.
RESERVED_TOKENS: tuple[str, ...] = tuple(f"<|reserved_{index}|>" for index in range(4))
# Every special token in id order: the roles, then the reserved ids.
ADDED_SPECIAL_TOKENS: tuple[str, ...] = (*SPECIAL_TOKENS.values(), *RESERVED_TOKENS)
ATOMIC_WORDS: tuple[str, ...] = ("Jehovah", "JEHOVAH")
TOKENIZER_KINDS = ("bpe", "char")
# Raised whenever train_bpe_tokenizer or train_char_tokenizer would write a different file for the same corpus.
TOKENIZER_FORMAT = 2

log = logging.getLogger(__name__)

_BYTE_TOKENS = [f"<0x{byte:02X}>" for byte in range(256)]


_ATOMIC_PATTERN = re.compile("|".join(map(re.escape, ATOMIC_WORDS)))


def _add_atomic_words(tokenizer: Tokenizer) -> None:
    tokenizer.add_tokens([AddedToken(word, normalized=False, single_word=False) for word in ATOMIC_WORDS])


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE with ``vocab_size`` entries in all, special and atomic tokens included."""
    minimum = len(ADDED_SPECIAL_TOKENS) + len(ATOMIC_WORDS) + 256
    if vocab_size < minimum:
        raise ValueError(f"--vocab-size {vocab_size}: a byte-level BPE needs at least {minimum} (specials + bytes)")
    tokenizer = Tokenizer(models.BPE())
    # add_prefix_space=False keeps round trips exact; verses get their leading space from encode_verses().
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(ATOMIC_WORDS),
        special_tokens=list(ADDED_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=terminal_bars(),  # its own bars, the merges included
    )
    # The atomic words are cut out of the training text, so that no merge is spent on them and they get ids
    # of their own at the end of the vocabulary.
    pieces = (piece for text in texts for piece in _ATOMIC_PATTERN.split(" " + text) if piece)
    tokenizer.train_from_iterator(pieces, trainer)
    _add_atomic_words(tokenizer)
    return tokenizer


def train_char_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """One token per character for the ``vocab_size`` minus 256 minus specials most frequent characters;
    rarer characters are spelled as UTF-8 byte tokens (``<0xE7>``) so any text still round-trips."""
    budget = vocab_size - len(ADDED_SPECIAL_TOKENS) - len(ATOMIC_WORDS) - len(_BYTE_TOKENS)
    if budget < 1:
        raise ValueError(f"--vocab-size {vocab_size}: a character tokenizer needs more than {vocab_size - budget}")
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(" " + text)
    characters = [char for char, _ in counts.most_common(budget)]
    vocab = {token: index for index, token in enumerate([*ADDED_SPECIAL_TOKENS, *ATOMIC_WORDS, *_BYTE_TOKENS, *sorted(characters)])}
    # A BPE without merges is a character model; it is the HF model that offers byte fallback.
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tokenizer.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in ADDED_SPECIAL_TOKENS])
    _add_atomic_words(tokenizer)
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return tokenizer


def tokenizer_cache_path(corpus: Corpus, kind: str, vocab_size: int, cache_dir: Path) -> Path:
    # TOKENIZER_FORMAT in the name: a tokenizer cached by an older version is not taken for this version's.
    return Path(cache_dir) / "tokenizers" / f"{kind}-{vocab_size}-{corpus.fingerprint}-v{TOKENIZER_FORMAT}.json"


def load_or_train_tokenizer(corpus: Corpus, kind: str = "bpe", vocab_size: int = 8192, cache_dir: str | Path | None = None) -> Path:
    """Path of the tokenizer.json for this corpus, kind and size, trained on the first call and reused after."""
    from genesis_data.corpus import default_cache_dir

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"--tokenizer {kind!r}: expected one of {', '.join(TOKENIZER_KINDS)}")
    path = tokenizer_cache_path(corpus, kind, vocab_size, Path(cache_dir or default_cache_dir()))
    if path.is_file():
        return path
    log.info("training a %s tokenizer with %d entries (once; cached as %s)", kind, vocab_size, path)
    train = train_bpe_tokenizer if kind == "bpe" else train_char_tokenizer
    verses = sum(len(translation.texts) for translation in corpus.translations)
    tokenizer = train(track(corpus.iter_texts(), f"training the {kind} tokenizer", total=verses, unit="verses"),
                      vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tokenizer.save(str(tmp))
    os.replace(tmp, path)
    return path


def special_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of ``SPECIAL_TOKENS`` by role: ``{"pad": 0, "bos": 1, ...}``."""
    ids = {role: tokenizer.token_to_id(token) for role, token in SPECIAL_TOKENS.items()}
    missing = [SPECIAL_TOKENS[role] for role, id_ in ids.items() if id_ is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {', '.join(missing)}; train it with genesis-data train-tokenizer")
    return ids


def file_fingerprint(path: str | Path) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def encode_verses(tokenizer: Tokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All verses, each with its leading space, as one flat token array plus offsets
    (verse i is ``tokens[offsets[i]:offsets[i + 1]]``)."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    encodings = tokenizer.encode_batch_fast([" " + text for text in texts], add_special_tokens=False)
    lengths = np.fromiter((len(encoding.ids) for encoding in encodings), dtype=np.int64, count=len(encodings))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.fromiter((id_ for encoding in encodings for id_ in encoding.ids), dtype=dtype, count=int(offsets[-1]))
    return tokens, offsets
