"""The four-task mixture the trainer draws batches from.

Each batch holds one task, drawn by ``weights``:

* ``lm``: random blocks of running text, ``input_ids`` and next-token ``labels`` (B, block_size).
* ``coherence``: "<bos> verse_a <sep> verse_b <eos>"; label 1 when b follows a, 0 when b is a random verse
  of the same translation; half and half (within one) in every batch.
* ``xref``: anchor, a verse (or range, at most ``MAX_XREF_VERSES``) it cross-references with positive votes,
  and a random verse of the same translation; each "<bos> text <eos>".
* ``paraphrase``: the same verse in two translations, in two languages whenever the verse exists in more
  than one; each "<bos> text <eos>".

A batch is a dict: ``task`` (its name) and, by task, the tensors ``BATCH_SEQUENCES`` below names (the one
statement of what the model's forward receives). Pair and triplet tasks are padded on the right with the pad id to
their longest sequence (never more than ``block_size``); masks are True on real tokens. Everything is precomputed
as index arrays over the tokenized corpus, so a batch is a few numpy gathers. Only verses outside the validation chapters are ever
sampled for training. ``validation_batches`` gives batches of any task built the same way from the held-out
chapters, and ``parallel_verses`` the same held-out verses in two translations.

All randomness comes from one numpy Generator; ``state_dict`` captures it, so a resumed run draws exactly
the batches an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
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
from genesis_data.readers.openbible import CrossReferences, read_cross_references
from genesis_data.tokenizer import file_fingerprint, special_token_ids

log = logging.getLogger(__name__)

TASKS = ("lm", "coherence", "xref", "paraphrase")
DEFAULT_WEIGHTS = {"lm": 0.70, "coherence": 0.15, "xref": 0.075, "paraphrase": 0.075}
# Each task's sequences in a batch: (the key of its token ids, the key of the mask of its real tokens, or None when
# every token is real). lm and coherence batches also hold "labels" (next tokens; 1 when verse b follows verse a).
BATCH_SEQUENCES = {
    "lm": [("input_ids", None)],
    "coherence": [("input_ids", "attention_mask")],
    "xref": [("anchor_ids", "anchor_mask"), ("positive_ids", "positive_mask"), ("negative_ids", "negative_mask")],
    "paraphrase": [("a_ids", "a_mask"), ("b_ids", "b_mask")],
}


def batch_tokens(batch: dict) -> int:
    """Tokens a model reads in a batch: every real token of every sequence in it."""
    total = 0
    for ids, mask in BATCH_SEQUENCES[batch["task"]]:
        total += batch[ids].numel() if mask is None else int(batch[mask].sum())
    return total
MAX_XREF_VERSES = 8  # a cross-referenced range is cut to its first verses
# Validation batches of each task come from a Generator with its own fixed seed, apart from the training stream.
VALIDATION_SEEDS = {"coherence": 1, "xref": 2, "paraphrase": 3}


@dataclass
class _SplitExamples:
    """What the pair and triplet tasks draw from in one split (training or validation), as verse indices."""

    split: str  # "training" or "validation", for messages
    verses: np.ndarray  # the split's aligned verses in corpus order: random (negative) verses are drawn here
    verse_bounds: np.ndarray  # n_translations + 1: where each translation's verses start in ``verses``
    coherence_anchors: np.ndarray  # verses followed by the next verse of their chapter, both in the split
    paraphrase_order: np.ndarray  # the split's verses ordered by key ...
    paraphrase_groups: np.ndarray  # ... and the (start, stop) ranges in it of keys in two or more translations
    xref_anchor: np.ndarray  # a cross reference's source verse ...
    xref_first: np.ndarray  # ... and the first and stop verse of its target range, in the same translation
    xref_stop: np.ndarray

    def translation_verses(self, translation: int) -> np.ndarray:
        return self.verses[self.verse_bounds[translation] : self.verse_bounds[translation + 1]]


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
        self._translation_names = corpus.names
        languages = sorted({t.language for t in corpus.translations})
        self._verse_language = np.array([languages.index(t.language) for t in corpus.translations])[verse_translation]
        self._translation_languages = {t.name: t.language for t in corpus.translations}

        references = None if cross_references is None else read_cross_references(cross_references)
        xrefs = _cross_reference_triplets(corpus, data, references, min_votes)
        self._train = _split_examples("training", data, verse_translation, trainable, trainable, xrefs)
        # A validation anchor is held out, its target range need not be: held-out targets alone would leave
        # few references, and the anchor is what the model has not seen.
        self._validation = _split_examples("validation", data, verse_translation, aligned & held_out, aligned, xrefs)

        unavailable = _unavailable_tasks(self._train, self.train_stream, references)
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        source = corpus.source if corpus.source is not None else f"the corpus ({', '.join(corpus.names)})"
        self.tasks, self.weights = self._enabled_tasks(weights, unavailable, source)
        self._validation_unavailable = _unavailable_tasks(self._validation, self.val_stream, references)
        for task in self.tasks:
            if self._validation_unavailable[task]:
                log.warning("task %s has no validation batches: %s", task, self._validation_unavailable[task])
        self._task_probabilities = np.array([self.weights[task] for task in self.tasks])
        self.rng = np.random.default_rng(seed)
        self._config_fingerprint = self._fingerprint(corpus, cross_references, val_fraction, min_votes)

    # ------------------------------------------------------------------ setup

    @staticmethod
    def _enabled_tasks(
        weights: dict[str, float], unavailable: dict[str, str | None], source: str | Path = "the corpus"
    ) -> tuple[list[str], dict[str, float]]:
        unknown = sorted(set(weights) - set(TASKS))
        if unknown:
            raise ValueError(f"weights: unknown task {', '.join(unknown)}; expected some of {', '.join(TASKS)}")
        negative = [task for task, weight in weights.items() if weight < 0]
        if negative:
            raise ValueError(f"weights: {', '.join(negative)} must not be negative")
        wanted = [task for task, weight in weights.items() if weight != 0]
        enabled = {task: weights[task] for task in wanted if not unavailable[task]}
        if not enabled:
            # The one message, with each task's reason, naming where the text came from (e.g. a --text-file).
            reasons = "; ".join(f"{task}: {unavailable[task]}" for task in wanted)
            raise ValueError(f"no task can be sampled from {source}: every task with a weight above 0 is "
                             f"unavailable ({reasons})")
        for task in wanted:
            if task not in enabled:
                log.warning("task %s is off: %s", task, unavailable[task])
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

    # A training batch of each task, drawn from the training stream (also what `genesis-data sample` shows).

    def _lm_batch(self) -> dict:
        starts = random_block_starts(self.rng, len(self.train_stream), self.block_size, self.batch_size)
        return lm_batch(self.train_stream, starts, self.block_size, self.pad_id)

    def _coherence_batch(self) -> dict:
        return self._draw_coherence(self._train, self.rng)

    def _xref_batch(self) -> dict:
        return self._draw_xref(self._train, self.rng)

    def _paraphrase_batch(self) -> dict:
        return self._draw_paraphrase(self._train, self.rng)

    # One batch of a pair or triplet task from one split's examples, drawn with ``rng``: training and
    # validation batches are built by the same code.

    def _draw_coherence(self, examples: _SplitExamples, rng: np.random.Generator) -> dict:
        bos, sep, eos = self.special_ids["bos"], self.special_ids["sep"], self.special_ids["eos"]
        labels = (np.arange(self.batch_size) + rng.integers(2)) % 2
        rng.shuffle(labels)
        anchors = examples.coherence_anchors
        firsts = anchors[rng.integers(len(anchors), size=self.batch_size)]
        sequences = []
        for first, label in zip(firsts, labels):
            second = first + 1 if label else self._random_verse(examples, rng, first, exclude=(first, first + 1))
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

    def _draw_xref(self, examples: _SplitExamples, rng: np.random.Generator) -> dict:
        picks = rng.integers(len(examples.xref_anchor), size=self.batch_size)
        anchors, positives, negatives = [], [], []
        for pick in picks:
            anchor, first, stop = examples.xref_anchor[pick], examples.xref_first[pick], examples.xref_stop[pick]
            anchors.append(anchor)
            positives.append(self._framed(self.tokenized.verse_tokens(first, stop)))
            negatives.append(self._random_verse(examples, rng, anchor, exclude=(anchor, *range(first, stop))))
        batch = {"task": "xref"}
        batch["anchor_ids"], batch["anchor_mask"] = self._framed_verses(anchors)
        batch["positive_ids"], batch["positive_mask"] = self._pad(positives)
        batch["negative_ids"], batch["negative_mask"] = self._framed_verses(negatives)
        return batch

    def _draw_paraphrase(self, examples: _SplitExamples, rng: np.random.Generator) -> dict:
        groups = examples.paraphrase_groups[rng.integers(len(examples.paraphrase_groups), size=self.batch_size)]
        a_verses, b_verses = [], []
        for start, stop in groups:
            members = examples.paraphrase_order[start:stop]
            a = members[rng.integers(len(members))]
            others = members[members != a]
            other_language = others[self._verse_language[others] != self._verse_language[a]]
            candidates = other_language if len(other_language) else others
            a_verses.append(a)
            b_verses.append(candidates[rng.integers(len(candidates))])
        a_ids, a_mask = self._framed_verses(a_verses)
        b_ids, b_mask = self._framed_verses(b_verses)
        return {"task": "paraphrase", "a_ids": a_ids, "a_mask": a_mask, "b_ids": b_ids, "b_mask": b_mask}

    def _random_verse(
        self, examples: _SplitExamples, rng: np.random.Generator, like: int, exclude: tuple[int, ...]
    ) -> int:
        """A random verse of the split from the translation of verse ``like``, none of ``exclude``; the split
        keeps only examples that have one (``_split_examples``)."""
        translation = self._verse_translation[like]
        low, high = examples.verse_bounds[translation], examples.verse_bounds[translation + 1]
        while True:
            verse = int(examples.verses[rng.integers(low, high)])
            if verse not in exclude:
                return verse

    def _framed(self, tokens: np.ndarray) -> np.ndarray:
        return np.concatenate([[self.special_ids["bos"]], tokens[: self.block_size - 2], [self.special_ids["eos"]]])

    def _framed_verses(self, verses: list[int] | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Each verse as "<bos> text <eos>", padded: (ids, mask)."""
        return self._pad([self._framed(self.tokenized.verse_tokens(verse)) for verse in verses])

    def _pad(self, sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = np.array([len(sequence) for sequence in sequences])
        ids = np.full((len(sequences), lengths.max()), self.pad_id, dtype=np.int64)
        for row, sequence in zip(ids, sequences):
            row[: len(sequence)] = sequence
        mask = np.arange(ids.shape[1]) < lengths[:, None]
        return torch.from_numpy(ids), torch.from_numpy(mask)

    # ------------------------------------------------------------------ validation

    @property
    def validation_tasks(self) -> list[str]:
        """The enabled tasks that have held-out examples, in ``TASKS`` order: the ones the trainer evaluates."""
        return [task for task in self.tasks if not self._validation_unavailable[task]]

    def validation_batches(self, n: int, task: str = "lm") -> list[dict]:
        """``n`` batches of ``task`` from the held-out chapters, in the format of its training batches, the same
        on every call and whatever the training stream has drawn.

        LM blocks are spread evenly over the held-out text. The other tasks are drawn like training batches,
        from held-out verses (an xref anchor is held out, its target range may not be), by a Generator with a
        fixed seed per task, so every run and every evaluation sees the same examples.
        """
        if task not in TASKS:
            raise ValueError(f"unknown task {task}; expected one of {', '.join(TASKS)}")
        if self._validation_unavailable[task]:
            raise ValueError(
                f"task {task} has no validation batches: {self._validation_unavailable[task]} "
                "(val_fraction is 0 or holds out too few chapters of this corpus)"
            )
        if task == "lm":
            starts = spread_block_starts(len(self.val_stream), self.block_size, n * self.batch_size)
            return [
                lm_batch(self.val_stream, batch_starts, self.block_size, self.pad_id)
                for batch_starts in starts.reshape(n, self.batch_size)
            ]
        rng = np.random.default_rng(VALIDATION_SEEDS[task])
        draw = getattr(self, f"_draw_{task}")
        return [draw(self._validation, rng) for _ in range(n)]

    @property
    def translation_languages(self) -> dict[str, str]:
        """{translation name: language code}, in corpus order."""
        return dict(self._translation_languages)

    def parallel_verses(self, a: str, b: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Up to ``n`` held-out verses that translations ``a`` and ``b`` (names) both have, spread evenly over
        their shared held-out verse keys in canonical order: ``(a_ids, a_mask, b_ids, b_mask)``, each row
        "<bos> text <eos>" padded like a paraphrase batch, row i of a and row i of b being the same verse."""
        if n < 1:
            raise ValueError(f"n {n}: expected at least 1")
        verses_a, verses_b = (self._validation.translation_verses(self._translation_index(name)) for name in (a, b))
        keys = self.tokenized.keys
        shared, in_a, in_b = np.intersect1d(keys[verses_a], keys[verses_b], return_indices=True)
        if len(shared) == 0:
            raise ValueError(f"translations {a} and {b} share no held-out verse")
        count = min(n, len(shared))
        picks = np.arange(count) * len(shared) // count
        return (*self._framed_verses(verses_a[in_a[picks]]), *self._framed_verses(verses_b[in_b[picks]]))

    def _translation_index(self, name: str) -> int:
        if name not in self._translation_names:
            raise ValueError(f"no translation {name} in the corpus; it has {', '.join(self._translation_names)}")
        return self._translation_names.index(name)

    # ------------------------------------------------------------------ resumption

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "config": self._config_fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != self._config_fingerprint:
            raise ValueError(
                "sampler state comes from a different corpus, tokenizer or sampler settings; "
                "resume with the same data options or start a new run"
            )
        self.rng.bit_generator.state = state["rng"]


def _split_examples(
    split: str,
    data: TokenizedCorpus,
    verse_translation: np.ndarray,
    selected: np.ndarray,
    xref_targets: np.ndarray,
    xrefs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> _SplitExamples:
    """The examples of one split: ``selected`` (boolean mask) are its aligned verses; a cross reference is kept
    when its anchor is selected and its whole target range is in ``xref_targets``.

    Coherence and xref examples are kept only when a random verse can be drawn for them: a verse of the split
    in the same translation that is neither the anchor nor in its pair or target range. A tiny split (a
    held-out chapter of two verses) thus has no such example rather than a batch that cannot be built.
    """
    keys, n_translations = data.keys, len(data.translation_starts) - 1
    verses = np.flatnonzero(selected)
    verse_bounds = np.searchsorted(verse_translation[verses], np.arange(n_translations + 1), side="left")
    split_verses = np.diff(verse_bounds)  # per translation
    consecutive = _consecutive_verse_anchors(keys, verse_translation, selected)
    order, groups = _same_verse_groups(keys, selected)
    anchor, first, stop = xrefs
    # Cumulative counts test a whole range at once.
    targets_before = np.concatenate([[0], np.cumsum(xref_targets)])
    selected_before = np.concatenate([[0], np.cumsum(selected)])
    excluded = 1 + selected_before[stop] - selected_before[first]  # the anchor and the range's verses in the split
    kept = (
        selected[anchor]
        & (targets_before[stop] - targets_before[first] == stop - first)
        & (split_verses[verse_translation[anchor]] > excluded)
    )
    return _SplitExamples(
        split=split,
        verses=verses,
        verse_bounds=verse_bounds,
        coherence_anchors=consecutive[split_verses[verse_translation[consecutive]] > 2],
        paraphrase_order=order,
        paraphrase_groups=groups,
        xref_anchor=anchor[kept],
        xref_first=first[kept],
        xref_stop=stop[kept],
    )


def _unavailable_tasks(
    examples: _SplitExamples, lm_stream: np.ndarray, references: CrossReferences | None
) -> dict[str, str | None]:
    """Why each task has no examples in the split; None for those that have some."""
    split = examples.split
    return {
        "lm": f"the corpus has no {split} text" if len(lm_stream) < 2 else None,
        "coherence": (
            f"no translation has two consecutive {split} verses and a third to draw as the random verse"
            if len(examples.coherence_anchors) == 0
            else None
        ),
        "xref": (
            "no cross references given (pass cross_references / --cross-references)"
            if references is None
            else f"no cross reference joins a {split} verse to verses of its translation"
            if len(examples.xref_anchor) == 0
            else None
        ),
        "paraphrase": (
            f"it needs two verse-aligned translations with {split} verses in common"
            if len(examples.paraphrase_groups) == 0
            else None
        ),
    }


def _consecutive_verse_anchors(keys: np.ndarray, verse_translation: np.ndarray, selected: np.ndarray) -> np.ndarray:
    """Verses whose next verse in the file is the next verse of the same chapter, both selected."""
    follows = (
        (keys[1:] == keys[:-1] + 1) & (verse_translation[1:] == verse_translation[:-1]) & selected[1:] & selected[:-1]
    )
    return np.flatnonzero(follows)


def _same_verse_groups(keys: np.ndarray, selected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Selected verses ordered by key, and the (start, stop) ranges in that order of keys found in at least
    two translations (a key occurs at most once per translation)."""
    candidates = np.flatnonzero(selected)
    order = candidates[np.argsort(keys[candidates], kind="stable")]
    sorted_keys = keys[order]
    boundaries = np.flatnonzero(np.diff(sorted_keys)) + 1
    starts = np.concatenate([[0], boundaries])
    stops = np.concatenate([boundaries, [len(order)]])
    shared = stops - starts >= 2
    return order, np.stack([starts[shared], stops[shared]], axis=1)


def _cross_reference_triplets(
    corpus: Corpus, data: TokenizedCorpus, references: CrossReferences | None, min_votes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor verse, first and stop verse of its target range) for every cross reference with at least
    ``min_votes`` votes, joined within each aligned translation; the range contiguous and apart from the
    anchor. Each split keeps those whose verses it may use (``_split_examples``)."""
    empty = np.zeros(0, dtype=np.int64)
    if references is None:
        return empty, empty, empty
    kept = references.votes >= min_votes
    source, first_key, last_key = references.source[kept], references.target_first[kept], references.target_last[kept]
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
        apart = (anchor < first) | (anchor > last)
        keep = contiguous & apart
        anchors.append(anchor[keep])
        firsts.append(first[keep])
        stops.append(last[keep] + 1)
    if not anchors:
        return empty, empty, empty
    return np.concatenate(anchors), np.concatenate(firsts), np.concatenate(stops)
