"""Theological concept clustering: do the words of one concept sit together in the model's representation?

A TOML file names groups of words (`concepts.toml` beside this module is the default). Each word is looked up
in a few verses of the corpus; each occurrence becomes one point, the model's final hidden state averaged over
the word's tokens in that verse, labelled by the word's group. The score is the silhouette of those points
under cosine distance: near 1 when groups form tight, separate clusters, near 0 when they overlap.

A silhouette is not comparable across word lists, so it comes with a baseline: the same score with the words
dealt out to groups at random (group sizes kept, every occurrence of a word keeping its word's new group),
averaged over a fixed set of such shuffles. The gap between the two is what training adds beyond the fact
that occurrences of one word resemble each other.

Everything that depends only on the inputs (the file, the verses, their tokens, the shuffles) is fixed at
construction, so a measure is a few batched forward passes and a silhouette over a few hundred points.
"""

from __future__ import annotations

import logging
import re
import time
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.metrics import silhouette_score

from genesis_data.corpus import Corpus
from genesis_model.tokenizer import GenesisTokenizer
from genesis_train.callbacks import Callback, Metrics, inference
from genesis_train.config import ConfigError

if TYPE_CHECKING:
    from genesis_train.trainer import Trainer

log = logging.getLogger(__name__)

DEFAULT_CONCEPTS_FILE = Path(__file__).with_name("concepts.toml")
MAX_TOKENS = 128  # per context row, <|bos|> included
BATCH_SIZE = 64  # context rows per forward pass
EXAMPLE = '[groups] love = ["love", "mercy"]'  # quoted in the error messages: what a valid file looks like


def load_concept_groups(path: Path) -> dict[str, list[str]]:
    """The [groups] table of a concepts file: group name -> words. Any mistake is a one-line ConfigError."""
    def fail(problem: str) -> ConfigError:
        return ConfigError(f"--concepts: {path}: {problem}")

    if not path.is_file():
        raise fail(f"no such file; give a TOML file with a [groups] table of word lists, e.g. {EXAMPLE}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise fail(f"not valid TOML ({error}); fix the file or leave --concepts out for the built-in groups") from None
    groups = raw.get("groups")
    if not isinstance(groups, dict) or not groups:
        raise fail(f"no [groups] table of word lists; write them under one, e.g. {EXAMPLE}")
    owner: dict[str, str] = {}  # word -> its group, to catch a word listed in two groups
    for name, words in groups.items():
        if not isinstance(words, list) or not all(isinstance(w, str) and w.strip() for w in words):
            raise fail(f"group {name!r} must be a list of non-empty strings (words), got {words!r}")
        for word in words:
            if word in owner and owner[word] != name:
                raise fail(f"{word!r} is in both groups {owner[word]!r} and {name!r}; a word may belong to one group")
            owner[word] = name
    # A word listed twice in one group is kept once; it would otherwise count its contexts twice.
    return {name: list(dict.fromkeys(words)) for name, words in groups.items()}


def find_contexts(corpus: Corpus, word: str, limit: int) -> list[tuple[str, int]]:
    """Up to `limit` verses that contain `word` as a whole word (case-sensitive), as (verse text, character
    offset of the word's first occurrence). The verses of every translation, in corpus order, are searched and
    the chosen ones are spread evenly over all matches, so each translation and book gets its share."""
    pattern = re.compile(r"(?<!\w)" + re.escape(word) + r"(?!\w)")
    matches = []
    for text in corpus.iter_texts():
        # The substring test first: a plain `in` is far cheaper than the regex, and most verses fail it.
        if word in text and (match := pattern.search(text)):
            matches.append((text, match.start()))
    if len(matches) <= limit:
        return matches
    return [matches[i] for i in np.arange(limit) * len(matches) // limit]


def frame_context(tokenizer: GenesisTokenizer, text: str, start: int, end: int,
                  max_tokens: int = MAX_TOKENS) -> tuple[list[int], list[int]]:
    """Token ids of one verse framed like training ("<|bos|>" then the verse with its leading space), and the
    positions of the tokens that cover characters start:end of the verse (the word).

    Attention is causal, so tokens after the word cannot change its hidden states: the row ends at the word's
    last token. A word further in than max_tokens keeps the tokens just before it, behind the <|bos|>."""
    encoding = tokenizer.tokenizer.encode(" " + text, add_special_tokens=False)
    start, end = start + 1, end + 1  # the leading space shifts every character by one
    covering = [i for i, (s, e) in enumerate(encoding.offsets) if s < end and e > start]
    last = covering[-1] + 1
    first = max(0, last - (max_tokens - 1))
    ids = [tokenizer.bos_id, *encoding.ids[first:last]]
    return ids, [1 + i - first for i in covering if i >= first]


class ConceptClustering(Callback):
    """Silhouette of concept groups in the model's hidden states, with a shuffled-groups baseline."""

    name = "concepts"

    def __init__(self, concepts_file: Path | None, corpus: Corpus, tokenizer_file: Path, every: int,
                 contexts_per_word: int = 8, shuffles: int = 20, seed: int = 0, *, max_tokens: int = MAX_TOKENS):
        for name, value, least in (("every", every, 1), ("contexts_per_word", contexts_per_word, 1),
                                   ("shuffles", shuffles, 1), ("max_tokens", max_tokens, 2)):
            if value < least:
                raise ValueError(f"ConceptClustering: {name} must be at least {least}, got {value}")
        self.every = every
        self.path = Path(concepts_file) if concepts_file is not None else DEFAULT_CONCEPTS_FILE
        listed = load_concept_groups(self.path)
        contexts = {word: find_contexts(corpus, word, contexts_per_word) for words in listed.values() for word in words}
        self.groups = self._groups_in_corpus(listed, contexts)

        tokenizer = GenesisTokenizer.from_file(tokenizer_file)
        if tokenizer.bos_id is None:
            raise ValueError(f"{tokenizer_file}: the tokenizer has no <|bos|> token")
        # One row per occurrence; `occurrence_word` ties each row to its word, `word_group` each word to its group.
        self.words = [word for words in self.groups.values() for word in words]
        word_group = np.array([g for g, words in enumerate(self.groups.values()) for _ in words])
        rows, positions, occurrence_word = [], [], []
        for index, word in enumerate(self.words):
            for text, start in contexts[word]:
                ids, covering = frame_context(tokenizer, text, start, start + len(word), max_tokens)
                rows.append(ids)
                positions.append(covering)
                occurrence_word.append(index)
        self.occurrence_word = np.array(occurrence_word)

        # Right-padded: attention is causal, so real tokens never see the padding, and the mask skips it.
        self.lengths = torch.tensor([len(ids) for ids in rows])
        self.input_ids = torch.zeros(len(rows), int(self.lengths.max()), dtype=torch.long)
        self.word_mask = torch.zeros_like(self.input_ids, dtype=torch.bool)
        for row, (ids, covering) in enumerate(zip(rows, positions)):
            self.input_ids[row, :len(ids)] = torch.tensor(ids)
            self.word_mask[row, covering] = True

        self.labels = word_group[self.occurrence_word]
        # Shuffle which group each word belongs to (a permutation keeps the group sizes); fixed here, so every
        # measure compares against the same baselines.
        rng = np.random.default_rng(seed)
        self.shuffled_labels = np.stack([rng.permutation(word_group)[self.occurrence_word] for _ in range(shuffles)])

    def _groups_in_corpus(self, listed: dict[str, list[str]], contexts: dict[str, list]) -> dict[str, list[str]]:
        """The groups restricted to words that occur in the corpus, without those left under 2 words; one notice
        for what was dropped, and a ConfigError when fewer than 2 groups remain."""
        missing = [word for word, found in contexts.items() if not found]
        kept = {name: [w for w in words if contexts[w]] for name, words in listed.items()}
        dropped = [name for name, words in kept.items() if len(words) < 2]
        groups = {name: words for name, words in kept.items() if len(words) >= 2}
        if missing or dropped:
            log.warning("--concepts %s: not in the corpus, dropped: %s%s", self.path, ", ".join(missing) or "none",
                        f"; groups left with fewer than 2 words, dropped: {', '.join(dropped)}" if dropped else "")
        if len(groups) < 2:
            raise ConfigError(f"--concepts: {self.path}: {len(groups)} group(s) have 2 or more words that occur in "
                              f"the corpus, need at least 2; list words that appear in the verses (whole words, "
                              f"case-sensitive)")
        return groups

    def embed(self, trainer: Trainer) -> np.ndarray:
        """(occurrences, d) float32: each row's final hidden states averaged over the word's tokens."""
        points = []
        with inference(trainer) as model:
            for start in range(0, len(self.input_ids), BATCH_SIZE):
                batch = slice(start, start + BATCH_SIZE)
                length = int(self.lengths[batch].max())  # drop the padding columns no row of this batch needs
                ids = self.input_ids[batch, :length].to(trainer.device)
                mask = self.word_mask[batch, :length].to(trainer.device)
                points.append(model.pooled(ids, mask).cpu())
        return torch.cat(points).numpy()

    def score(self, points: np.ndarray) -> tuple[float, float]:
        """(silhouette with the true groups, mean silhouette over the shuffled groups); NaN for points that are
        not finite (a diverged model), which silhouette_score would refuse."""
        if not np.isfinite(points).all():
            return float("nan"), float("nan")
        true = silhouette_score(points, self.labels, metric="cosine")
        shuffled = np.mean([silhouette_score(points, labels, metric="cosine") for labels in self.shuffled_labels])
        return float(true), float(shuffled)

    def measure(self, trainer: Trainer) -> Metrics:
        began = time.perf_counter()
        silhouette, shuffled = self.score(self.embed(trainer))
        return {"concepts_silhouette": silhouette, "concepts_silhouette_shuffled": shuffled,
                "concepts_seconds": time.perf_counter() - began}

    def on_step_end(self, trainer: Trainer, step: int, record: Metrics) -> Metrics | None:
        if step % self.every == 0 or step == trainer.cfg.steps:
            return self.measure(trainer)
        return None
