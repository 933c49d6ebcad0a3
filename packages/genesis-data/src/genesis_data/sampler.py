"""The four-task mixture the trainer draws batches from.

Each batch holds one task, drawn by ``weights``:

* ``lm``: random blocks of running text, ``input_ids`` and next-token ``labels`` (B, block_size).
* ``coherence``: "<bos> verse_a <sep> verse_b <eos>"; label 1 when b follows a, 0 when b is a random verse
  of the same translation; half and half (within one) in every batch.
* ``xref``: anchor, a verse (or range, at most ``MAX_XREF_VERSES``) it cross-references with positive votes,
  and a random verse of the same translation; each "<bos> text <eos>".
* ``paraphrase``: the same verse in two translations, in two languages whenever the verse exists in more
  than one; each "<bos> text <eos>".

Pair and triplet tasks are padded on the right with the pad id to their longest sequence (never more than
``block_size``); masks are True on real tokens. Everything is precomputed as index arrays over the
tokenized corpus, so a batch is a few numpy gathers. Only verses outside the validation chapters are ever
sampled; ``validation_batches`` gives LM batches from the held-out chapters.

All randomness comes from one numpy Generator; ``state_dict`` captures it, so a resumed run draws exactly
the batches an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from genesis_data.blocks import (
    TokenizedCorpus,
    held_out_verses,
    lm_batch,
    lm_stream,
    random_block_starts,
    spread_block_starts,
)
from genesis_data.corpus import Corpus
from genesis_data.readers.openbible import read_cross_references
from genesis_data.tokenizer import file_fingerprint, special_token_ids

log = logging.getLogger(__name__)

TASKS = ("lm", "coherence", "xref", "paraphrase")
DEFAULT_WEIGHTS = {"lm": 0.70, "coherence": 0.15, "xref": 0.075, "paraphrase": 0.075}
MAX_XREF_VERSES = 8  # a cross-referenced range is cut to its first verses


class MultiTaskSampler:
    def __init__(
        self,
        corpus: Corpus,
        tokenizer_path: str | Path,
        block_size: int = 256,
        batch_size: int = 8,
        weights: dict[str, float] | None = None,
        seed: int = 0,
        cross_references: str | Path | None = None,
        cache_dir: str | Path | None = None,
        val_fraction: float = 0.02,
        min_votes: int = 1,
    ) -> None:
        if block_size < 4:
            raise ValueError(f"block_size {block_size}: expected at least 4 (room for <bos>, <sep>, <eos> and text)")
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected at least 1")
        self.block_size = block_size
        self.batch_size = batch_size
        self.tokenizer_path = Path(tokenizer_path)
        self.special_ids = special_token_ids(Tokenizer.from_file(str(tokenizer_path)))
        self.pad_id = self.special_ids["pad"]
        self.tokenized = TokenizedCorpus.load_or_build(corpus, tokenizer_path, cache_dir)
        data = self.tokenized

        # The split has its own fixed seed: runs with different sampling seeds validate on the same chapters.
        held_out = held_out_verses(corpus, data.keys, val_fraction, seed=0)
        self.train_stream = lm_stream(data, ~held_out, self.special_ids["eos"])
        self.val_stream = lm_stream(data, held_out, self.special_ids["eos"])

        aligned = np.concatenate([np.full(len(t), t.aligned) for t in corpus.translations])
        trainable = aligned & ~held_out
        verse_translation = np.repeat(np.arange(len(corpus)), np.diff(data.translation_starts))
        self._verse_translation = verse_translation
        # Aligned training verses, grouped by translation, for drawing random verses of one translation.
        self._train_verses = np.flatnonzero(trainable)
        self._train_verse_bounds = np.searchsorted(
            verse_translation[self._train_verses], np.arange(len(corpus) + 1), side="left"
        )

        self._coherence_anchors = _consecutive_verse_anchors(data.keys, verse_translation, trainable)
        self._paraphrase_order, self._paraphrase_groups = _same_verse_groups(data.keys, trainable)
        languages = sorted({t.language for t in corpus.translations})
        self._verse_language = np.array([languages.index(t.language) for t in corpus.translations])[verse_translation]
        xref_anchor, xref_first, xref_stop = _cross_reference_triplets(
            corpus, data, trainable, cross_references, min_votes
        )
        self._xref_anchor, self._xref_first, self._xref_stop = xref_anchor, xref_first, xref_stop

        self.tasks, self.weights = self._enabled_tasks(dict(DEFAULT_WEIGHTS if weights is None else weights), cross_references)
        self._task_probabilities = np.array([self.weights[task] for task in self.tasks])
        self.rng = np.random.default_rng(seed)
        self._config_fingerprint = self._fingerprint(corpus, cross_references, val_fraction, min_votes)

    # ------------------------------------------------------------------ setup

    def _enabled_tasks(self, weights: dict[str, float], cross_references) -> tuple[list[str], dict[str, float]]:
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise ValueError(f"weights: unknown task {', '.join(unknown)}; expected some of {', '.join(TASKS)}")
        negative = [task for task, weight in weights.items() if weight < 0]
        if negative:
            raise ValueError(f"weights: {', '.join(negative)} must not be negative")
        unavailable = {
            "lm": "the corpus has no training text" if len(self.train_stream) < 2 else None,
            "coherence": "no two consecutive verses with text" if len(self._coherence_anchors) == 0 else None,
            "xref": (
                "no cross references given (pass cross_references / --cross-references)"
                if cross_references is None
                else "no cross reference joins two training verses of one translation"
                if len(self._xref_anchor) == 0
                else None
            ),
            "paraphrase": "it needs two verse-aligned translations" if len(self._paraphrase_groups) == 0 else None,
        }
        enabled = {}
        for task, weight in weights.items():
            if weight == 0:
                continue
            if unavailable[task]:
                log.warning("task %s is off: %s", task, unavailable[task])
                continue
            enabled[task] = weight
        if not enabled:
            raise ValueError("no task can be sampled: every task with a weight above 0 is unavailable for this corpus")
        total = sum(enabled.values())
        tasks = [task for task in TASKS if task in enabled]
        return tasks, {task: enabled[task] / total for task in tasks}

    def _fingerprint(self, corpus: Corpus, cross_references, val_fraction: float, min_votes: int) -> str:
        config = {
            "corpus": corpus.fingerprint,
            "tokenizer": file_fingerprint(self.tokenizer_path),
            "cross_references": file_fingerprint(cross_references) if cross_references else None,
            "block_size": self.block_size,
            "batch_size": self.batch_size,
            "weights": self.weights,
            "val_fraction": val_fraction,
            "min_votes": min_votes,
        }
        return hashlib.blake2b(json.dumps(config, sort_keys=True).encode(), digest_size=16).hexdigest()

    # ------------------------------------------------------------------ sampling

    def __iter__(self) -> MultiTaskSampler:
        return self

    def __next__(self) -> dict:
        task = self.tasks[self.rng.choice(len(self.tasks), p=self._task_probabilities)]
        return getattr(self, f"_{task}_batch")()

    def _lm_batch(self) -> dict:
        starts = random_block_starts(self.rng, len(self.train_stream), self.block_size, self.batch_size)
        return lm_batch(self.train_stream, starts, self.block_size, self.pad_id)

    def _coherence_batch(self) -> dict:
        rng, bos, sep, eos = self.rng, self.special_ids["bos"], self.special_ids["sep"], self.special_ids["eos"]
        labels = (np.arange(self.batch_size) + rng.integers(2)) % 2
        rng.shuffle(labels)
        firsts = self._coherence_anchors[rng.integers(len(self._coherence_anchors), size=self.batch_size)]
        sequences = []
        for first, label in zip(firsts, labels):
            second = first + 1 if label else self._random_verse(first, exclude=(first, first + 1))
            a, b = self.tokenized.verse_tokens(first), self.tokenized.verse_tokens(second)
            budget = self.block_size - 3
            a_length = min(len(a), max(budget - len(b), budget // 2))
            sequences.append(np.concatenate([[bos], a[:a_length], [sep], b[: budget - a_length], [eos]]))
        input_ids, attention_mask = self._pad(sequences)
        return {
            "task": "coherence",
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.from_numpy(labels.astype(np.int64)),
        }

    def _xref_batch(self) -> dict:
        rng = self.rng
        picks = rng.integers(len(self._xref_anchor), size=self.batch_size)
        anchors, positives, negatives = [], [], []
        for pick in picks:
            anchor, first, stop = self._xref_anchor[pick], self._xref_first[pick], self._xref_stop[pick]
            negative = self._random_verse(anchor, exclude=(anchor, *range(first, stop)))
            anchors.append(self._framed(self.tokenized.verse_tokens(anchor)))
            positives.append(self._framed(self.tokenized.verse_tokens(first, stop)))
            negatives.append(self._framed(self.tokenized.verse_tokens(negative)))
        batch = {"task": "xref"}
        for name, sequences in (("anchor", anchors), ("positive", positives), ("negative", negatives)):
            batch[f"{name}_ids"], batch[f"{name}_mask"] = self._pad(sequences)
        return batch

    def _paraphrase_batch(self) -> dict:
        rng = self.rng
        groups = self._paraphrase_groups[rng.integers(len(self._paraphrase_groups), size=self.batch_size)]
        a_sequences, b_sequences = [], []
        for start, stop in groups:
            members = self._paraphrase_order[start:stop]
            a = members[rng.integers(len(members))]
            others = members[members != a]
            other_language = others[self._verse_language[others] != self._verse_language[a]]
            candidates = other_language if len(other_language) else others
            b = candidates[rng.integers(len(candidates))]
            a_sequences.append(self._framed(self.tokenized.verse_tokens(a)))
            b_sequences.append(self._framed(self.tokenized.verse_tokens(b)))
        a_ids, a_mask = self._pad(a_sequences)
        b_ids, b_mask = self._pad(b_sequences)
        return {"task": "paraphrase", "a_ids": a_ids, "a_mask": a_mask, "b_ids": b_ids, "b_mask": b_mask}

    def _random_verse(self, like: int, exclude: tuple[int, ...]) -> int:
        """A random training verse from the translation of verse ``like``, none of ``exclude``."""
        translation = self._verse_translation[like]
        low, high = self._train_verse_bounds[translation], self._train_verse_bounds[translation + 1]
        if high - low <= len(exclude):
            raise ValueError(f"translation {translation} has too few training verses to draw a random verse")
        while True:
            verse = int(self._train_verses[self.rng.integers(low, high)])
            if verse not in exclude:
                return verse

    def _framed(self, tokens: np.ndarray) -> np.ndarray:
        return np.concatenate([[self.special_ids["bos"]], tokens[: self.block_size - 2], [self.special_ids["eos"]]])

    def _pad(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = np.array([len(sequence) for sequence in sequences])
        ids = np.full((len(sequences), lengths.max()), self.pad_id, dtype=np.int64)
        for row, sequence in zip(ids, sequences):
            row[: len(sequence)] = sequence
        mask = np.arange(ids.shape[1]) < lengths[:, None]
        return torch.from_numpy(ids), torch.from_numpy(mask)

    # ------------------------------------------------------------------ validation and resumption

    def validation_batches(self, n: int) -> list[dict]:
        """``n`` LM batches from the held-out chapters, the same on every call: blocks spread evenly over them."""
        if len(self.val_stream) < 2:
            raise ValueError("the corpus has no validation text (val_fraction is 0 or the corpus is one chapter)")
        starts = spread_block_starts(len(self.val_stream), self.block_size, n * self.batch_size)
        return [
            lm_batch(self.val_stream, batch_starts, self.block_size, self.pad_id)
            for batch_starts in starts.reshape(n, self.batch_size)
        ]

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "config": self._config_fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != self._config_fingerprint:
            raise ValueError(
                "sampler state comes from a different corpus, tokenizer or sampler settings; "
                "resume with the same data options or start a new run"
            )
        self.rng.bit_generator.state = state["rng"]


def _consecutive_verse_anchors(keys: np.ndarray, verse_translation: np.ndarray, trainable: np.ndarray) -> np.ndarray:
    """Verses whose next verse in the file is the next verse of the same chapter, both trainable."""
    follows = (
        (keys[1:] == keys[:-1] + 1) & (verse_translation[1:] == verse_translation[:-1]) & trainable[1:] & trainable[:-1]
    )
    return np.flatnonzero(follows)


def _same_verse_groups(keys: np.ndarray, trainable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trainable verses ordered by key, and the (start, stop) ranges in that order of keys found in at least
    two translations (a key occurs at most once per translation)."""
    candidates = np.flatnonzero(trainable)
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    sorted_keys = keys[order]
    boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [len(order)]])
    shared = stops - starts >= 2
    return order, np.stack([starts[shared], stops[shared]], axis=1)


def _cross_reference_triplets(
    corpus: Corpus, data: TokenizedCorpus, trainable: np.ndarray, path: str | Path | None, min_votes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor verse, first and stop verse of its target range) for every cross reference with at least
    ``min_votes`` votes, joined within each translation; all verses trainable and the range contiguous."""
    empty = np.zeros(0, dtype=np.int64)
    if path is None:
        return empty, empty, empty
    references = read_cross_references(path)
    kept = references.votes >= min_votes
    source, first_key, last_key = references.source[kept], references.target_first[kept], references.target_last[kept]
    untrainable_before = np.concatenate([[0], np.cumsum(~trainable)])  # to test a whole range at once
    anchors, firsts, stops = [], [], []
    for index, translation in enumerate(corpus.translations):
        if not translation.aligned or len(translation) == 0:
            continue
        base = data.translation_starts[index]
        order = np.argsort(translation.keys, kind="stable")
        sorted_keys = translation.keys[order]
        found = np.searchsorted(sorted_keys, source)
        found = np.minimum(found, len(sorted_keys) - 1)
        has_source = sorted_keys[found] == source
        low = np.searchsorted(sorted_keys, first_key, side="left")
        high = np.minimum(np.searchsorted(sorted_keys, last_key, side="right"), low + MAX_XREF_VERSES)
        ok = has_source & (high > low)
        anchor = base + order[found[ok]]
        first = base + order[low[ok]]
        last = base + order[high[ok] - 1]
        contiguous = last - first == high[ok] - 1 - low[ok]
        untouched = (untrainable_before[last + 1] - untrainable_before[first] == 0) & trainable[anchor]
        apart = (anchor < first) | (anchor > last)
        keep = contiguous & untouched & apart
        anchors.append(anchor[keep])
        firsts.append(first[keep])
        stops.append(last[keep] + 1)
    if not anchors:
        return empty, empty, empty
    return np.concatenate(anchors), np.concatenate(firsts), np.concatenate(stops)
