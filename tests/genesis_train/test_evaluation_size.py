"""Evaluation sized for the device: `--eval-batches 0` picks the count from the measured peak, LM validation
batches run in pieces, and the pieces give the whole batches' means."""

import copy

import pytest
import torch

import genesis_train.trainer as trainer_module
from genesis_train.config import EVAL_BATCHES_MAX, EVAL_SECONDS_AT_PEAK
from genesis_train.trainer import Trainer


def peak_fitting(trainer: Trainer, batches: float) -> float:
    """The peak FLOP/s at which `batches` validation batches of every task of `trainer` take EVAL_SECONDS_AT_PEAK
    (LM-length rows, forward only: a third of the training FLOPs)."""
    cfg, tasks = trainer.cfg, len(trainer.sampler.validation_tasks)
    return trainer.flops_per_token / 3 * cfg.block_size * cfg.batch_size * tasks * batches / EVAL_SECONDS_AT_PEAK


@pytest.fixture
def peak(monkeypatch):
    """Sets the device's measured peak the trainer sees."""
    def set_peak(flops: float) -> None:
        monkeypatch.setattr(trainer_module, "peak_flops", lambda device, dtype: (flops, "measured"))
    return set_peak


def test_eval_batches_0_takes_what_runs_in_the_budget(quick_config, peak):
    cfg = quick_config(eval_batches=0)
    peak(1e30)
    lines = []
    fast = Trainer(cfg, log=lines.append)
    assert fast.eval_batches == EVAL_BATCHES_MAX and len(fast.val_batches["coherence"]) == EVAL_BATCHES_MAX
    assert not any(line.startswith("evaluating") for line in lines)

    peak(peak_fitting(fast, 3.5))
    trainer = Trainer(cfg, log=lines.append)
    assert trainer.eval_batches == 3
    assert len(trainer.val_batches["coherence"]) == len(trainer.val_batches["paraphrase"]) == 3
    assert any(line.startswith("evaluating 3 batches per task (--eval-batches 0") for line in lines), lines

    peak(peak_fitting(fast, 0.2))  # not even one batch fits: one all the same
    assert Trainer(cfg, log=lambda *_: None).eval_batches == 1


def test_an_explicit_eval_batches_is_kept_and_a_resumed_run_keeps_its_count(quick_config, peak):
    cfg = quick_config(eval_batches=5)
    peak(1e30)
    fast = Trainer(cfg, log=lambda *_: None)
    assert fast.eval_batches == 5
    peak(peak_fitting(fast, 2.5))
    assert Trainer(cfg, log=lambda *_: None).eval_batches == 5

    cfg = quick_config(eval_batches=0, steps=2, checkpoint_interval=2, eval_interval=2)
    first = Trainer(cfg, log=lambda *_: None)
    assert first.eval_batches == 2
    first.fit()
    peak(1e30)  # a faster machine now: a new run would take 8
    cfg.resume = True
    resumed = Trainer(cfg, log=lambda *_: None)
    assert resumed.step == 2 and resumed.eval_batches == 2


def test_lm_validation_in_pieces_gives_the_whole_batches_mean(quick_config, monkeypatch):
    monkeypatch.setattr(trainer_module, "PIECE_SECONDS_AT_PEAK", 0.0)  # one row a piece
    cfg = quick_config(eval_batches=2)
    trainer = Trainer(cfg, log=lambda *_: None)
    pieces = trainer.val_batches["lm"]
    assert len(pieces) == 2 * cfg.batch_size and all(len(p["input_ids"]) == 1 for p in pieces)
    measured = trainer.evaluate()

    # Reference: the unsplit batches through a float64 copy of the model, each batch's mean loss weighed by its
    # labelled tokens.
    reference = copy.deepcopy(trainer.model).double().eval()
    losses, tokens = [], []
    with torch.no_grad():
        for batch in trainer.sampler.validation_batches(2, task="lm"):
            assert len(batch["input_ids"]) == cfg.batch_size
            out = reference(batch)
            losses.append(out["loss"])
            tokens.append(out["tokens"].double())
    expected = (torch.stack(losses) * torch.stack(tokens)).sum() / torch.stack(tokens).sum()
    assert measured["val_loss_lm"] == pytest.approx(expected.item(), rel=1e-5)
