"""Modular arithmetic for grokking experiments (Power et al. 2022, "Grokking"; Nanda et al. 2023).

``ModularArithmetic`` is a batch source with the interface the trainer uses of ``MultiTaskSampler`` (one
task, ``lm``). Its data is every equation ``a op b = c`` with a and b in [0, p) and c = a op b mod p,
split once into training and held-out equations; the model has to predict c.

Token ids (vocabulary size p + 5 + len(ADDED_SPECIAL_TOKENS), 111 for p = 97):

* 0 .. p-1: the numbers, so a number's id is its value;
* p .. p+3: the operations ``+ - * /`` (all four whatever the operation, so one tokenizer serves a modulus);
* p+4: ``=``;
* p+5 ..: the special tokens of ``genesis_data.tokenizer.ADDED_SPECIAL_TOKENS`` in their order (``<|pad|>``,
  ``<|bos|>``, ..., the reserved ones), so genesis-model's ``GenesisTokenizer`` finds the ones it needs.

A sequence is ``<|bos|> a op b =`` with labels ``-100 -100 -100 -100 c`` (block_size 5): the "a ∘ b =" of
Power et al., led by ``<|bos|>`` because ``GenesisTokenizer.encode`` starts every prompt with it, so
``genesis-generate --prompt "12 + 7 ="`` gives the model exactly the context it was trained on. Labels are
already shifted (``labels[t]`` is the token to predict at position t), so only c, after "=", is learned.

The split is a shuffle of all equations by ``split_seed``: the first ``round(train_fraction * N)`` are the
training set, the rest the validation set; both are kept in equation order ((a, b) ascending). Training
batches come from ``seed`` alone: epochs of a fresh permutation of the training set, read as one stream, so
every batch holds exactly ``batch_size`` equations and a batch at an epoch's end runs on into the next
epoch (it may then hold an equation twice); each epoch of the stream holds every training equation once.
When ``batch_size`` covers the training set, every batch is the whole training set in equation order (the
full-batch setting of both papers) and ``batch_size`` becomes the training set's size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from genesis_data.tokenizer import ADDED_SPECIAL_TOKENS, SPECIAL_TOKENS

OPERATIONS = ("+", "-", "*", "/")
EQUALS = "="
IGNORE = -100  # the label of positions without a target (cross entropy's ignore_index)


class ModularArithmetic:
    tasks = ["lm"]
    weights = {"lm": 1.0}
    validation_tasks = ["lm"]
    block_size = 5  # <|bos|> a op b =

    def __init__(
        self,
        modulus: int = 97,
        operation: str = "+",
        train_fraction: float = 0.3,
        batch_size: int = 512,
        seed: int = 0,
        split_seed: int = 0,
    ) -> None:
        _check_options(modulus, operation, train_fraction, batch_size)
        self.modulus = p = modulus
        self.operation = operation
        self.train_fraction = train_fraction

        self.vocabulary = [*map(str, range(p)), *OPERATIONS, EQUALS, *ADDED_SPECIAL_TOKENS]
        self.vocab_size = len(self.vocabulary)
        self.bos_id = self.vocabulary.index(SPECIAL_TOKENS["bos"])
        self.operation_id = p + OPERATIONS.index(operation)
        self.equals_id = p + len(OPERATIONS)

        # Every equation, (a, b) ascending; division has no b = 0.
        numbers = np.arange(p, dtype=np.int64)
        a, b = (column.ravel() for column in np.meshgrid(numbers, numbers, indexing="ij"))
        if operation == "/":
            a, b = a[b != 0], b[b != 0]
        self._pairs = np.stack([a, b], axis=1)
        n = len(self._pairs)
        self._inputs = np.tile(np.array([self.bos_id, 0, self.operation_id, 0, self.equals_id], dtype=np.int64), (n, 1))
        self._inputs[:, 1], self._inputs[:, 3] = a, b
        self._labels = np.full((n, self.block_size), IGNORE, dtype=np.int64)
        self._labels[:, -1] = _answers(a, b, operation, p)

        n_train = round(train_fraction * n)
        if not 0 < n_train < n:
            raise ValueError(
                f"--train-fraction {train_fraction}: gives {n_train:,} of the {n:,} equations to training; "
                "expected at least one on each side"
            )
        shuffled = np.random.default_rng(split_seed).permutation(n)
        self._train_rows = np.sort(shuffled[:n_train])
        self._validation_rows = np.sort(shuffled[n_train:])

        self.batch_size = min(batch_size, n_train)
        # Shuffling a full batch would change nothing but the order of rows: it stays in equation order.
        self._shuffle = self.batch_size < n_train
        self.rng = np.random.default_rng(seed)
        self._start_epoch()
        config = {
            "source": "modular-arithmetic",
            "modulus": modulus,
            "operation": operation,
            "train_fraction": train_fraction,
            "split_seed": split_seed,
            "batch_size": self.batch_size,
        }
        self._config_fingerprint = _digest(json.dumps(config, sort_keys=True))

    def describe(self) -> str:
        """One line, e.g. "a + b mod 97: 2,823 train / 6,586 validation equations (30%)"."""
        return (
            f"a {self.operation} b mod {self.modulus}: {len(self._train_rows):,} train / "
            f"{len(self._validation_rows):,} validation equations ({self.train_fraction * 100:g}%)"
        )

    @property
    def train_pairs(self) -> np.ndarray:
        """The training equations' (a, b), (n_train, 2), in equation order."""
        return self._pairs[self._train_rows]

    @property
    def validation_pairs(self) -> np.ndarray:
        """The held-out equations' (a, b), (n_validation, 2), in equation order."""
        return self._pairs[self._validation_rows]

    # ------------------------------------------------------------------ batches

    def __iter__(self) -> ModularArithmetic:
        return self

    def __next__(self) -> dict:
        picks = []
        needed = self.batch_size
        while needed:
            if self._position == len(self._order):
                self._start_epoch()
            taken = self._order[self._position : self._position + needed]
            picks.append(taken)
            self._position += len(taken)
            needed -= len(taken)
        return self._batch(self._train_rows[np.concatenate(picks)])

    def _start_epoch(self) -> None:
        # The Generator's state before the permutation is drawn is what a resumed run needs to draw it again.
        self._epoch_state = self.rng.bit_generator.state
        count = len(self._train_rows)
        self._order = self.rng.permutation(count) if self._shuffle else np.arange(count)
        self._position = 0

    def _batch(self, rows: np.ndarray) -> dict:
        # Fancy indexing copies, so a caller may change a batch in place without touching the data.
        return {
            "task": "lm",
            "input_ids": torch.from_numpy(self._inputs[rows]),
            "labels": torch.from_numpy(self._labels[rows]),
        }

    def _batches(self, rows: np.ndarray) -> list[dict]:
        return [self._batch(rows[start : start + self.batch_size]) for start in range(0, len(rows), self.batch_size)]

    def validation_batches(self, n: int, task: str = "lm") -> list[dict]:
        """Every held-out equation once, in equation order, in batches of ``batch_size`` (the last one may be
        smaller). ``n`` is ignored: the measure of grokking is exact accuracy over all held-out equations,
        never a sample of them."""
        if task not in self.validation_tasks:
            raise ValueError(f"task {task!r}: the algorithmic data has only the lm task")
        return self._batches(self._validation_rows)

    def train_batches(self) -> list[dict]:
        """Every training equation once, in equation order, in batches of ``batch_size`` (for full training
        accuracy); the training stream is not touched."""
        return self._batches(self._train_rows)

    # ------------------------------------------------------------------ tokenizer

    def tokenizer(self) -> Tokenizer:
        """A HF ``tokenizers`` WordLevel tokenizer over exactly this vocabulary, ids as in the module docstring."""
        vocab = {token: index for index, token in enumerate(self.vocabulary)}
        tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk"]))
        # Whitespace splits "12+7=" as well as "12 + 7 =" into numbers and symbols.
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        specials = [AddedToken(token, normalized=False, special=True) for token in ADDED_SPECIAL_TOKENS]
        tokenizer.add_special_tokens(specials)
        # WordPiece's decoder without cleanup joins tokens with spaces (no token starts with its "##" prefix).
        tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
        return tokenizer

    def write_tokenizer(self, path: str | Path) -> Path:
        """Writes the tokenizer.json to ``path`` (through a temporary file, so a reader never sees half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self.tokenizer().save(str(tmp))
        os.replace(tmp, path)
        return path

    def tokenizer_path(self, cache_dir: str | Path | None = None) -> Path:
        """``<cache_dir>/algorithmic/<fingerprint>/tokenizer.json``, written on the first call. The fingerprint is
        the tokenizer's own content, which depends on the modulus alone: all operations and splits share it."""
        from genesis_data.corpus import default_cache_dir

        fingerprint = _digest(self.tokenizer().to_str())
        path = Path(cache_dir or default_cache_dir()) / "algorithmic" / fingerprint / "tokenizer.json"
        return path if path.is_file() else self.write_tokenizer(path)

    # ------------------------------------------------------------------ resumption

    def state_dict(self) -> dict:
        return {"epoch_rng": self._epoch_state, "position": self._position, "config": self._config_fingerprint}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != self._config_fingerprint:
            raise ValueError(
                "sampler state comes from different algorithmic-task settings; resume with the same --modulus, "
                "--operation, --train-fraction, --split-seed and --batch-size or start a new run"
            )
        self.rng.bit_generator.state = state["epoch_rng"]
        self._start_epoch()
        self._position = state["position"]


def _check_options(modulus: int, operation: str, train_fraction: float, batch_size: int) -> None:
    if operation not in OPERATIONS:
        raise ValueError(f"--operation {operation!r}: expected one of {' '.join(OPERATIONS)}")
    if modulus < 2:
        raise ValueError(f"--modulus {modulus}: expected at least 2")
    if operation == "/" and not _is_prime(modulus):
        raise ValueError(f"--modulus {modulus}: division needs a prime modulus (only then has every b != 0 an inverse)")
    if not 0 < train_fraction < 1:  # also catches NaN
        raise ValueError(f"--train-fraction {train_fraction}: expected a fraction strictly between 0 and 1")
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: expected at least 1")


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % divisor for divisor in range(2, math.isqrt(n) + 1))


def _answers(a: np.ndarray, b: np.ndarray, operation: str, p: int) -> np.ndarray:
    """c = a op b mod p for every pair; division multiplies by b's inverse mod p (p prime, b != 0)."""
    if operation == "+":
        return (a + b) % p
    if operation == "-":
        return (a - b) % p
    if operation == "*":
        return (a * b) % p
    inverses = np.array([0, *(pow(value, -1, p) for value in range(1, p))])
    return (a * inverses[b]) % p
