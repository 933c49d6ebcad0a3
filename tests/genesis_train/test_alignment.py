"""The Procrustes distance against its closed form, and the alignment callback on a small model."""

import contextlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from genesis_model import ModelConfig, MultiTaskModel
from genesis_train.callbacks.alignment import CrossTranslationAlignment, procrustes_distance


def closed_form_distance(a, b):
    """min over orthogonal R of ||A R - B||_F for centred, unit-norm A and B: sqrt(2 - 2 * nuclear norm of A^T B)."""
    a, b = a - a.mean(0), b - b.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    return np.sqrt(max(0.0, 2 - 2 * np.linalg.svd(a.T @ b, compute_uv=False).sum()))


def test_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(40, 8))
    assert procrustes_distance(a, b) == pytest.approx(closed_form_distance(a, b), abs=1e-10)


def test_a_rotated_scaled_shifted_copy_is_at_distance_zero():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(30, 6))
    rotation, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert procrustes_distance(a, 3.0 * a @ rotation + 5.0) == pytest.approx(0.0, abs=1e-10)


def fake_trainer(model, steps=10):
    return SimpleNamespace(model=model, device=torch.device("cpu"), autocast=contextlib.nullcontext, sharded=False,
                           cfg=SimpleNamespace(steps=steps))


def verses(ids):
    return ids, torch.ones_like(ids, dtype=torch.bool)


def test_callback_on_identical_translations_is_perfectly_aligned():
    model = MultiTaskModel(ModelConfig(d_model=16, n_layers=1, n_heads=2, vocab_size=50, max_seq_len=16))
    ids = torch.randint(1, 50, (24, 7))
    callback = CrossTranslationAlignment(("A", "B"), (*verses(ids), *verses(ids)), every=5, batch_size=5)
    assert not (callback.shuffle == np.arange(24)).any()  # the baseline never pairs a verse with itself
    trainer = fake_trainer(model)
    assert callback.on_step_end(trainer, 3, {}) is None
    measured = callback.on_step_end(trainer, 5, {})
    assert measured["alignment_distance"] == pytest.approx(0.0, abs=1e-5)
    assert measured["alignment_distance_shuffled"] > 0.1
    assert measured["alignment_ratio"] == pytest.approx(0.0, abs=1e-4)
    with torch.no_grad():
        pooled = model.pooled(ids, torch.ones_like(ids, dtype=torch.bool)).double().numpy()
    assert measured["alignment_distance_shuffled"] == pytest.approx(
        closed_form_distance(pooled, pooled[callback.shuffle]), rel=1e-4)
    assert callback.on_step_end(trainer, 10, {}) is not None  # the last step is always measured
    assert model.training  # train mode restored
