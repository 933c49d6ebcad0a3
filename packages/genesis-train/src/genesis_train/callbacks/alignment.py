"""Cross-translation alignment: how well one orthogonal map carries a translation's verse representations onto
another's.

The same held-out verses in translations A and B are embedded with the pooled representation the heads use (the
mean of the final hidden states over a verse's tokens). Each set is centred and scaled to unit Frobenius norm; the
orthogonal Procrustes problem (`scipy.linalg.orthogonal_procrustes`) gives the rotation R that best maps A onto B,
and the distance is the residual ||A R - B||_F (0: identical up to rotation; sqrt(2) at most). The baseline solves
the same problem with B's rows shuffled, so no verse meets its translation: `alignment_ratio` = distance / shuffled
distance, below 1 when verses line up with their own translations more than with any verses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.linalg import orthogonal_procrustes

from genesis_train.callbacks import Callback, Metrics, inference

if TYPE_CHECKING:
    from genesis_train.trainer import Trainer


def procrustes_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Residual of the best rotation of the centred, unit-norm rows of `a` onto those of `b`."""
    a, b = (x - x.mean(0) for x in (a.astype(np.float64), b.astype(np.float64)))
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    rotation, _ = orthogonal_procrustes(a, b)
    return float(np.linalg.norm(a @ rotation - b))


def pooled_in_batches(trainer: Trainer, ids: torch.Tensor, mask: torch.Tensor, batch_size: int) -> np.ndarray:
    """The pooled representation of every row, `batch_size` rows a forward pass."""
    out = []
    with inference(trainer) as model:
        for start in range(0, len(ids), batch_size):
            rows = slice(start, start + batch_size)
            length = int(mask[rows].sum(1).max())  # padding beyond the longest row of the slice is not read
            out.append(model.pooled(ids[rows, :length].to(trainer.device), mask[rows, :length].to(trainer.device)))
    return torch.cat(out).float().cpu().numpy()


class CrossTranslationAlignment(Callback):
    name = "alignment"

    def __init__(self, pair: tuple[str, str], verses: tuple[torch.Tensor, ...], every: int, batch_size: int,
                 seed: int = 0):
        self.pair, self.every, self.batch_size = pair, every, batch_size
        self.a_ids, self.a_mask, self.b_ids, self.b_mask = verses
        # One fixed shuffle in which no verse keeps its own row (each row takes the next row of a random cycle),
        # so the baseline is the same at every measurement.
        cycle = np.random.default_rng(seed).permutation(len(self.a_ids))
        self.shuffle = np.empty_like(cycle)
        self.shuffle[cycle] = np.roll(cycle, -1)

    def measure(self, trainer: Trainer) -> Metrics:
        t0 = time.perf_counter()
        a = pooled_in_batches(trainer, self.a_ids, self.a_mask, self.batch_size)
        b = pooled_in_batches(trainer, self.b_ids, self.b_mask, self.batch_size)
        distance, shuffled = procrustes_distance(a, b), procrustes_distance(a, b[self.shuffle])
        return {"alignment_distance": distance, "alignment_distance_shuffled": shuffled,
                "alignment_ratio": distance / shuffled, "alignment_seconds": time.perf_counter() - t0}

    def on_step_end(self, trainer: Trainer, step: int, record: Metrics) -> Metrics | None:
        if step % self.every == 0 or step == trainer.cfg.steps:
            return self.measure(trainer)
        return None
