import math
import shutil
import time

import pytest
import torch

from genesis_model import load_pretrained
from genesis_train.checkpointing import list_checkpoints
from genesis_train.config import ConfigError
from genesis_train.metrics import read_metrics
from genesis_train.trainer import Trainer, train


def test_short_training_lowers_validation_loss(quick_config):
    cfg = quick_config(steps=80, eval_interval=40)
    result = train(cfg, log=lambda *_: None)
    records = read_metrics(cfg.run_dir / "metrics.jsonl")
    first, last = records[0]["val_loss_lm"], result["val_loss"]
    assert records[0]["step"] == 0 and records[-1]["step"] == 80
    # The untrained model sits above ln(512) = 6.2 nats; 80 steps reach the unigram statistics and beyond
    # (seen: 6.5 -> 5.3 in 60 steps). More than one nat down is a model that learned, not noise.
    assert last < first - 1.0, (first, last)
    assert any("loss_lm" in r for r in records)
    model = load_pretrained(result["checkpoint"])
    assert (result["checkpoint"] / "tokenizer.json").is_file()
    # tiny at vocabulary 512, counted by hand: the tied embedding 512 x 256; six layers of q, k, v, o (4 x 256 x 256),
    # gate/up (2 x 688 x 256), down (256 x 688) and two norms (2 x 256), DeepNorm's post-norm blocks leaving no final
    # norm; the heads: coherence (256 + 1), xref and paraphrase (256 x 256 each).
    layer = 4 * 256 * 256 + 3 * 688 * 256 + 2 * 256
    assert sum(p.numel() for p in model.parameters()) == 512 * 256 + 6 * layer + 257 + 2 * 256 * 256


def _weights(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("grokfast", [False, True], ids=["plain", "grokfast"])
def test_resume_continues_the_exact_same_run(quick_config, tmp_path, grokfast):
    options = dict(steps=6, checkpoint_interval=3, grokfast=grokfast)
    straight = Trainer(quick_config(out_dir=str(tmp_path / "a"), **options), log=lambda *_: None)
    straight.fit()
    reference = _weights(straight)

    cfg = quick_config(out_dir=str(tmp_path / "b"), **options)
    Trainer(cfg, log=lambda *_: None).fit()
    # pretend the run died after step 3: drop the later checkpoint, then resume from step 3
    shutil.rmtree(list_checkpoints(cfg.run_dir)[-1])
    cfg.resume = True
    resumed = Trainer(cfg, log=lambda *_: None)
    assert resumed.step == 3
    if grokfast:  # the filter's EMA came back with the checkpoint
        assert resumed.grokfast.ema and all(h.abs().sum() > 0 for h in resumed.grokfast.ema.values())
    resumed.fit()
    for name, tensor in _weights(resumed).items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    steps = [r["step"] for r in read_metrics(cfg.run_dir / "metrics.jsonl")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))


def test_keeps_only_the_last_checkpoints_and_no_partial_ones(quick_config):
    cfg = quick_config(steps=4, checkpoint_interval=1, keep_checkpoints=2, eval_interval=4)
    train(cfg, log=lambda *_: None)
    assert [p.name for p in list_checkpoints(cfg.run_dir)] == ["step-00000003", "step-00000004"]
    assert not [p for p in (cfg.run_dir / "checkpoints").iterdir() if p.name.startswith(".")]


def test_resume_with_another_shape_is_refused(quick_config):
    cfg = quick_config(steps=2, eval_interval=2, checkpoint_interval=2)
    train(cfg, log=lambda *_: None)
    other = quick_config(steps=4, mode="small", out_dir=cfg.out_dir, resume=True, gradient_checkpointing=True)
    with pytest.raises(ConfigError, match="--resume: .*another shape"):
        Trainer(other, log=lambda *_: None)


def test_every_evaluation_reports_each_task_and_every_measure_is_logged(quick_config):
    cfg = quick_config(steps=4, log_interval=2, eval_interval=2, eval_batches=2, checkpoint_interval=4,
                       alignment_every=2, alignment_verses=40, concepts="builtin", concepts_every=4,
                       detect_grokking=True, grokking_window=4, grokking_span=2, tensorboard="on")
    trainer = Trainer(cfg, log=lambda *_: None)
    assert set(trainer.val_batches) == {"lm", "coherence", "paraphrase"}  # no cross references given
    trainer.fit()
    records = {r["step"]: r for r in read_metrics(cfg.run_dir / "metrics.jsonl")}
    assert sorted(records) == [0, 2, 4]
    for task in ("lm", "coherence", "paraphrase"):
        assert records[4][f"val_loss_{task}"] > 0 and 0 <= records[4][f"val_accuracy_{task}"] <= 1
    assert records[4]["val_ppl_lm"] == pytest.approx(math.exp(records[4]["val_loss_lm"]))
    for step in (0, 2, 4):  # measured at initialization and at their intervals
        assert records[step]["weight_norm"] > 0 and records[step]["alignment_ratio"] > 0
    assert "concepts_silhouette" in records[0] and "concepts_silhouette" not in records[2]
    assert -1 <= records[4]["concepts_silhouette"] <= 1 and -1 <= records[4]["concepts_silhouette_shuffled"] <= 1
    assert records[4]["grad_norm"] > 0 and 0 < records[4]["mfu"] < 1
    assert len([k for k in records[4] if k.startswith("weight_norm_block_")]) == 6  # tiny has 6 blocks
    assert list((cfg.run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_grad_norm_is_the_global_norm_before_clipping(quick_config):
    trainer = Trainer(quick_config(steps=1, grad_clip=1e-6), log=lambda *_: None)
    state = trainer.sampler.state_dict()
    trainer.model(next(trainer.sampler))["loss"].backward()  # the same batch, by hand
    expected = torch.cat([p.grad.double().flatten() for p in trainer.model.parameters() if p.grad is not None]).norm()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.sampler.load_state_dict(state)
    numbers, _ = trainer.train_step()
    assert numbers["grad_norm"][0] == pytest.approx(expected.item(), rel=1e-5)  # not the clipped 1e-6


def test_grokfast_changes_the_trajectory(quick_config, tmp_path):
    plain = Trainer(quick_config(steps=3, out_dir=str(tmp_path / "a")), log=lambda *_: None)
    plain.fit()
    filtered = Trainer(quick_config(steps=3, out_dir=str(tmp_path / "b"), grokfast=True), log=lambda *_: None)
    filtered.fit()
    assert not torch.equal(plain.model.lm.embed.weight, filtered.model.lm.embed.weight)


def test_modular_dataset_trains_through_the_same_loop(quick_config):
    from genesis_model import GenesisTokenizer, generate

    cfg = quick_config(dataset="modular", mode="grokking", modulus=23, train_fraction=0.5, batch_size=64, steps=20,
                       eval_interval=10, checkpoint_interval=20, lr=1e-3, min_lr=1e-3)
    result = train(cfg, log=lambda *_: None)
    records = read_metrics(cfg.run_dir / "metrics.jsonl")
    assert [r["step"] for r in records if "val_accuracy_lm" in r] == [0, 10, 20]
    assert all(0 <= r["val_accuracy_lm"] <= 1 for r in records if "val_accuracy_lm" in r)
    tokenizer = GenesisTokenizer.from_pretrained(result["checkpoint"])
    prompt = tokenizer.encode("3 + 4 =")
    assert tokenizer.decode(prompt) == "3 + 4 ="
    model = load_pretrained(result["checkpoint"])
    [answer] = generate(model, [prompt], max_new_tokens=1, pad_id=tokenizer.pad_id)
    assert len(answer) == 1 and 0 <= answer[0] < tokenizer.vocab_size


@pytest.mark.parametrize("option", [["--alignment-every", "10"], ["--concepts"], ["--bible-dir", "."]])
def test_bible_measures_are_refused_on_the_modular_dataset(option):
    from genesis_train.cli import build_parser
    from genesis_train.config import build_config

    args = {k: v for k, v in vars(build_parser().parse_args(["--dataset", "modular", *option])).items()
            if k != "config"}
    with pytest.raises(ConfigError, match=r"needs Bible text; it does not apply to --dataset modular"):
        build_config(None, args)


def test_compiling_shows_progress_once_for_evaluation_and_once_for_training(quick_config, monkeypatch, capsys):
    from genesis_data import progress

    class SlowFirstForward:
        """Stands in for torch.compile's wrapper: the first forward with and without gradients takes a while."""
        def __init__(self, model):
            self.model, self.traced = model, set()

        def __call__(self, batch):
            if torch.is_grad_enabled() not in self.traced:
                self.traced.add(torch.is_grad_enabled())
                time.sleep(0.3)
            return self.model(batch)

    monkeypatch.setattr(torch, "compile", SlowFirstForward)
    monkeypatch.setattr(progress, "PLAIN_EVERY", 0.1)
    cfg = quick_config(steps=4, eval_interval=2, log_interval=2, checkpoint_interval=4, eval_batches=1,
                       compile=True, progress=True)
    Trainer(cfg, log=lambda *_: None).fit()
    lines = capsys.readouterr().err.splitlines()
    done = [line.split(": done in")[0] for line in lines if ": done in" in line]
    assert done == ["--compile: compiling the model for evaluation",
                    "--compile: compiling the model for training (the first step)"], lines
