"""The fit check before training: the estimate against the free memory, and the options it offers."""

import pytest
import torch

from genesis_model import PRESETS, training_memory
from genesis_model.config import CUDA_CONTEXT_BYTES, bytes_human
from genesis_train.config import ConfigError, TrainConfig
from genesis_train.preflight import Shape, check_fit, smaller_shapes

MODEL = PRESETS["deep_narrow_40"]
CPU = torch.device("cpu")


def free(monkeypatch, nbytes):
    monkeypatch.setattr("genesis_train.preflight.available_memory", lambda device: nbytes)


def test_smaller_shapes_keep_the_global_batch_least_change_first():
    assert smaller_shapes(Shape(4, 2, False)) == [
        Shape(4, 2, True), Shape(2, 4, False), Shape(2, 4, True), Shape(1, 8, False), Shape(1, 8, True)]
    assert smaller_shapes(Shape(3, 1, True)) == []


def test_a_run_that_fits_passes(monkeypatch):
    free(monkeypatch, training_memory(MODEL, 8, 1024, autocast=False).total)
    check_fit(TrainConfig(mode="deep_narrow_40", batch_size=8), MODEL, 1024, CPU, torch.float32)


def test_a_run_that_does_not_fit_names_both_numbers_and_the_first_shape_that_fits(monkeypatch):
    fp32 = {b: training_memory(MODEL, b, 1024, autocast=False) for b in (8, 4)}
    # Less than batch 8 needs even with checkpointing, more than batch 4 with checkpointing.
    available = (fp32[8].total_checkpointed + fp32[4].total_checkpointed) // 2
    free(monkeypatch, available)
    with pytest.raises(ConfigError) as error:
        check_fit(TrainConfig(mode="deep_narrow_40", batch_size=8, grad_accum=2), MODEL, 1024, CPU, torch.float32)
    assert str(error.value) == (
        f"--mode deep_narrow_40 at 8 x 1024 tokens a micro-batch in float32 needs about {bytes_human(fp32[8].total)} "
        f"to train, {bytes_human(available)} is free on cpu; --gradient-checkpointing --batch-size 4 --grad-accum 4 "
        f"fits (about {bytes_human(fp32[4].total_checkpointed)}, the same global batch)")


def test_on_a_gpu_autocast_and_the_cuda_context_count(monkeypatch):
    bf16 = training_memory(MODEL, 8, 1024)
    free(monkeypatch, bf16.total + CUDA_CONTEXT_BYTES - 1)
    with pytest.raises(ConfigError, match=r"in bfloat16 needs about .*; --gradient-checkpointing --batch-size 8 "
                                          r"--grad-accum 1 fits"):
        check_fit(TrainConfig(mode="deep_narrow_40"), MODEL, 1024, torch.device("cuda"), torch.bfloat16)


def test_nothing_fits(monkeypatch):
    free(monkeypatch, 1024**2)
    with pytest.raises(ConfigError, match=r"not even one sequence a micro-batch with --gradient-checkpointing fits: "
                                          r"choose a smaller --mode"):
        check_fit(TrainConfig(mode="deep_narrow_40"), MODEL, 1024, CPU, torch.float32)


def test_processes_sharing_a_cpu_each_get_their_share(monkeypatch):
    """torchrun's ranks of one node train on its one RAM: with 2 of them, a run that fits the whole RAM alone does
    not fit half of it."""
    needed = training_memory(MODEL, 8, 1024, autocast=False).total
    free(monkeypatch, needed + 1)
    cfg = TrainConfig(mode="deep_narrow_40", batch_size=8)
    check_fit(cfg, MODEL, 1024, CPU, torch.float32)
    with pytest.raises(ConfigError, match=r"is free on cpu \(its share for each of 2 processes on this machine\)"):
        check_fit(cfg, MODEL, 1024, CPU, torch.float32, sharing=2)
