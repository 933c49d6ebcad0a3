"""A run directory holds one run; resuming reads only whole, intact checkpoints; a non-finite step never reaches the
weights, a checkpoint or metrics.jsonl."""

import io
import json
import pickle

import pytest
import torch
from safetensors.torch import load_file

from genesis_train.checkpointing import MANIFEST, TRAIN_STATE, list_checkpoints
from genesis_train.config import ConfigError, TrainingError
from genesis_train.trainer import Trainer, train


def quiet(cfg):
    return Trainer(cfg, log=lambda *_: None)


def tree(path):
    """Every file under path with its bytes: what a refused command must leave as it found it."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(quick_config):
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    cfg = quick_config(steps=4, eval_interval=2, checkpoint_interval=2, log_interval=2)
    train(cfg, log=lambda *_: None)
    return cfg


# -- one run a directory ---------------------------------------------------------------------------------------------

def test_a_new_run_into_a_directory_with_another_run_is_refused(finished, quick_config):
    before = tree(finished.run_dir)
    with pytest.raises(ConfigError, match=r"--out-dir .*holds another run \(checkpoints up to step-00000004\): "
                                          r"continue it with --resume, choose another --out-dir, or pass --overwrite"):
        quiet(quick_config(steps=2, out_dir=finished.out_dir))
    assert tree(finished.run_dir) == before


def test_overwrite_replaces_the_other_run(finished, quick_config):
    cfg = quick_config(steps=2, eval_interval=2, checkpoint_interval=2, out_dir=finished.out_dir, overwrite=True)
    train(cfg, log=lambda *_: None)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step-00000002"]
    assert max(json.loads(line)["step"] for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_with_nothing_to_resume_says_so(quick_config, tmp_path):
    with pytest.raises(ConfigError, match=r"--resume: .* holds no complete checkpoint to resume from; run without "
                                          r"--resume"):
        quiet(quick_config(out_dir=str(tmp_path / "empty"), resume=True))
    assert not (tmp_path / "empty").exists()


def test_a_directory_without_its_manifest_is_not_a_checkpoint(finished):
    newest = list_checkpoints(finished.run_dir)[-1]
    (newest / MANIFEST).unlink()  # e.g. left by an older version's in-place delete
    assert [p.name for p in list_checkpoints(finished.run_dir)] == ["step-00000002"]


# -- damaged train state on --resume: the file is named, the previous intact checkpoint offered ------------------------

def rewrite_train_state(checkpoint, data: bytes):
    """Replaces train_state.pt and records its new size in the manifest, so that only the content is wrong."""
    (checkpoint / TRAIN_STATE).write_bytes(data)
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"][TRAIN_STATE] = len(data)
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


class Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def without_a_key(state_bytes: bytes, tmp_path) -> bytes:
    state = torch.load(io.BytesIO(state_bytes), weights_only=True)
    del state["optimizer"]
    torch.save(state, tmp_path / "state.pt")
    return (tmp_path / "state.pt").read_bytes()


@pytest.mark.parametrize("damage, message", [
    ("truncated", r"train_state\.pt: \d+ bytes, \d+ when it was saved \(truncated or changed\)"),
    ("missing", r"train_state\.pt: missing"),
    ("garbage", r"train_state\.pt: not a readable train state"),
    ("code", r"train_state\.pt: not a readable train state"),
    ("no-optimizer", r"train_state\.pt: lacks optimizer"),
])
def test_a_damaged_train_state_is_named_and_the_previous_checkpoint_offered(finished, quick_config, tmp_path, damage,
                                                                           message, capsys):
    newest = list_checkpoints(finished.run_dir)[-1]
    state = newest / TRAIN_STATE
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[:1000])
    elif damage == "missing":
        state.unlink()
    elif damage == "garbage":
        rewrite_train_state(newest, b"not a checkpoint at all")
    elif damage == "code":
        rewrite_train_state(newest, pickle.dumps(Payload()))
    else:
        rewrite_train_state(newest, without_a_key(state.read_bytes(), tmp_path))
    with pytest.raises(ConfigError, match=rf"--resume: .*{message}.*; step-00000002 is intact: move .*step-00000004 "
                                          rf"aside to resume from it"):
        quiet(quick_config(steps=6, out_dir=finished.out_dir, resume=True))
    assert "this ran" not in capsys.readouterr().out  # the pickle's code never ran


# -- non-finite steps ----------------------------------------------------------------------------------------------

def poison(trainer, at_steps):
    """Makes the training loss NaN at the given steps (the trainer's step counter before the step)."""
    forward = trainer.train_model

    def poisoned(batch):
        out = forward(batch)
        if trainer.step in at_steps:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out
    trainer.train_model = poisoned


def snapshot(trainer):
    return ([p.detach().clone() for p in trainer.model.parameters()],
            {k: v.clone() for k, v in trainer.optimizer.state_dict()["state"].get(0, {}).items()})


def test_a_non_finite_step_is_skipped_and_training_goes_on(quick_config):
    trainer = quiet(quick_config(steps=3))
    trainer.train_step()
    trainer.step = 1
    weights, moments = snapshot(trainer)
    poison(trainer, {1})
    numbers, _ = trainer.train_step()
    assert trainer.skipped_in_a_row == 1 and numbers["skipped_steps"] == [1.0, 1]
    after, after_moments = snapshot(trainer)
    assert all(torch.equal(a, b) for a, b in zip(weights, after))  # neither the weights
    assert all(torch.equal(moments[k], after_moments[k]) for k in moments)  # nor AdamW's moments moved
    trainer.step = 2
    numbers, _ = trainer.train_step()
    assert trainer.skipped_in_a_row == 0 and "skipped_steps" not in numbers
    assert not all(torch.equal(a, b) for a, b in zip(weights, snapshot(trainer)[0]))


def test_training_stops_after_max_skipped_steps_and_the_log_stays_json(quick_config):
    cfg = quick_config(steps=20, log_interval=1, checkpoint_interval=2, eval_interval=2, max_skipped_steps=3)
    trainer = quiet(cfg)
    poison(trainer, set(range(5, 20)))
    with pytest.raises(TrainingError, match=r"^step 8: the \w+ loss is nan, 3 steps in a row skipped "
                                            r"\(--max-skipped-steps 3\); lower --lr"):
        trainer.fit()
    lines = (cfg.run_dir / "metrics.jsonl").read_text().splitlines()

    def no_constants(name):
        raise AssertionError(f"metrics.jsonl holds {name}, which is not JSON")
    records = [json.loads(line, parse_constant=no_constants) for line in lines]
    # Steps 6 and 7 were skipped and logged, their NaN loss as null; step 8, the third, stopped the run.
    assert [r["step"] for r in records if "skipped_steps" in r] == [6, 7]
    assert [r["step"] for r in records if any(v is None for k, v in r.items() if k.startswith("loss_"))] == [6, 7]
    checkpoints = list_checkpoints(cfg.run_dir)
    assert [p.name for p in checkpoints] == ["step-00000002", "step-00000004", "step-00000006"]
    for checkpoint in checkpoints:  # step 6 was skipped: its weights are step 5's, finite
        assert all(torch.isfinite(w).all() for w in load_file(checkpoint / "model.safetensors").values())


def test_no_checkpoint_of_non_finite_weights(quick_config):
    cfg = quick_config(steps=2, checkpoint_interval=1, eval_interval=2)
    trainer = quiet(cfg)
    trainer.train_step()
    trainer.step = 1
    trainer.save()
    with torch.no_grad():
        next(trainer.model.parameters())[0] = float("inf")
    with pytest.raises(TrainingError, match=r"^step 1: 1 weight tensors hold non-finite values \(first: .*\); no "
                                            r"checkpoint written"):
        trainer.save(name="grokking-step-00000001")
    assert [p.name for p in (cfg.run_dir / "checkpoints").iterdir()] == ["step-00000001"]


def test_a_full_disk_during_a_save_is_reported_as_one(quick_config, monkeypatch):
    import shutil
    from collections import namedtuple

    from genesis_train import checkpointing

    trainer = quiet(quick_config(steps=1))

    def failing_save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(checkpointing.torch, "save", failing_save)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(OSError, match="No space left on device") as error:
        trainer.save()
    assert error.value.errno == 28 and error.value.filename.endswith("train_state.pt")
    assert not any((trainer.run_dir / "checkpoints").iterdir())  # the temporary directory is gone too


# -- a full disk inside safetensors' writer ---------------------------------------------------------------------------

def test_a_disk_that_fills_while_the_weights_are_written_is_one_line_and_leaves_the_last_checkpoint(
        tmp_path, cache_dir, monkeypatch, capsys):
    """safetensors reports a full disk as SafetensorError "... (os error 28)" (seen on a 1 MiB tmpfs); it reaches the
    user as the one-line disk-full message naming the file, and the half-written checkpoint is gone."""
    from safetensors import SafetensorError

    from genesis_model import checkpoint
    from genesis_train.cli import main

    saves = []

    def fills_the_disk_on_the_second_save(tensors, path, metadata=None):
        saves.append(path)
        if len(saves) == 1:
            return real_save_file(tensors, path, metadata=metadata)
        open(path, "wb").write(b"\0" * 64)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    real_save_file = checkpoint.save_file
    monkeypatch.setattr(checkpoint, "save_file", fills_the_disk_on_the_second_save)
    run = tmp_path / "run"
    argv = ["--steps", "4", "--checkpoint-interval", "2", "--eval-interval", "2", "--eval-batches", "2",
            "--block-size", "64", "--vocab-size", "512", "--device", "cpu", "--no-progress", "--cache-dir",
            str(cache_dir), "--out-dir", str(run)]
    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == (f"genesis-train: error: disk full while writing {run}/checkpoints/.step-00000004.tmp/"
                         f"model.safetensors.partial (free space or choose another --out-dir)")
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000002"]
