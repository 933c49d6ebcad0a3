"""The grokking rule on synthetic validation curves whose answer is known by construction."""

import math

import numpy as np
import pytest

from genesis_train.callbacks.grokking import GrokkingDetector, GrokkingRule

STEPS = range(0, 10_001, 100)  # an evaluation every 100 steps


def events(curve, train=None, rule=GrokkingRule()):
    detector = GrokkingDetector(rule)
    found = []
    for step in STEPS:
        event = detector.add(step, curve(step), None if train is None else train(step))
        if event:
            found.append(event)
    return found


def grokking_loss(step):
    """Falls to a plateau by step 300, creeps up while the model memorizes, drops from 4.8 to 0.5 in steps
    5000-5500, then stays low."""
    if step <= 300:
        return 5.0 - 0.4 * step / 300
    if step <= 5000:
        return 4.6 + 0.2 * (step - 300) / 4700
    if step <= 5500:
        return 4.8 - 4.3 * (step - 5000) / 500
    return 0.5


def memorized_train_loss(step):
    return max(0.01, 4.0 * math.exp(-step / 200))


def test_grokking_curve_fires_once_inside_the_drop():
    found = events(grokking_loss, memorized_train_loss)
    assert len(found) == 1
    event = found[0]
    # The first evaluation at least 10% below the plateau's median (about 4.7): 4.8 - 4.3 * 100/500 = 3.94 at 5100.
    assert event["step"] == 5100
    assert event["metric"] == "val_loss_lm"
    assert 4.6 < event["before"] < 4.8 and event["after"] == pytest.approx(3.94)
    assert event["plateau_end"] == 5000 and event["plateau_start"] == 4500
    assert event["train_at_plateau_end"] == pytest.approx(0.01)
    assert event["rule_window"] == 500 and event["rule_threshold"] == 0.10 and event["rule_span"] == 500


def test_smooth_decay_from_a_high_start_never_fires():
    assert events(lambda step: 1.0 + 8.0 * math.exp(-step / 1500)) == []


def test_noisy_flat_series_never_fires():
    noise = np.random.default_rng(0).normal(0.0, 0.01, len(STEPS))
    values = dict(zip(STEPS, 3.0 * (1 + noise)))
    assert events(values.__getitem__) == []


def test_drop_before_any_plateau_never_fires():
    # 9 -> 3 within the first 500 steps (no whole window of history before it), flat afterwards.
    assert events(lambda step: 9.0 - 6.0 * min(step, 500) / 500) == []


def test_no_memorization_no_event():
    # The same validation curve, but train loss tracks it: the model never memorized, so the drop is not grokking.
    assert events(grokking_loss, lambda step: 0.95 * grokking_loss(step)) == []


def test_without_a_train_series_the_shape_alone_decides():
    assert [e["step"] for e in events(grokking_loss)] == [5100]


def test_accuracy_series_read_as_error():
    rule = GrokkingRule(metric="val_accuracy_lm")
    accuracy = lambda step: 0.02 if step <= 6000 else min(1.0, 0.02 + (step - 6000) / 400)  # noqa: E731
    found = events(accuracy, lambda step: 1.0 if step >= 1000 else step / 1000, rule)
    assert [e["step"] for e in found] == [6100]
    assert found[0]["before"] == pytest.approx(0.02) and found[0]["after"] == pytest.approx(0.27)


def test_a_second_plateau_and_drop_fire_a_second_event():
    def twice(step):
        return grokking_loss(step) if step <= 7000 else (0.5 if step <= 8500 else 0.1)
    assert [e["step"] for e in events(twice)] == [5100, 8600]


def test_slow_drop_beyond_span_does_not_fire():
    # The same 10%+ fall, spread over 3000 steps: never 10% below a plateau within 500 steps of its end.
    slow = lambda step: 4.8 if step <= 5000 else max(2.0, 4.8 - 0.3 * (step - 5000) / 1000)  # noqa: E731
    assert events(slow) == []


def test_state_round_trip_fires_where_the_uninterrupted_run_does():
    rule = GrokkingRule()
    first, resumed = GrokkingDetector(rule), GrokkingDetector(rule)
    found = []
    for step in STEPS:
        detector = first if step <= 4800 else resumed
        if step == 4900:
            resumed.load_state_dict(first.state_dict())
        if event := detector.add(step, grokking_loss(step), memorized_train_loss(step)):
            found.append(event)
    assert found == events(grokking_loss, memorized_train_loss)


# -- through the trainer: events.jsonl, the metrics line, the kept checkpoint, and resume ---------------------------

def synthetic_validation(trainer):
    """A validation loss that sits high (memorization: train loss ~6 is far below it) and drops at step 26."""
    return {"val_loss_lm": 50.0 if trainer.step < 26 else 30.0, "val_accuracy_lm": 0.0}


class StopAt(Exception):
    pass


def grokking_config(quick_config, out_dir, **overrides):
    return quick_config(steps=40, eval_interval=2, log_interval=2, checkpoint_interval=10, keep_checkpoints=1,
                        detect_grokking=True, grokking_window=10, grokking_span=4, out_dir=str(out_dir), **overrides)


def test_event_through_the_trainer_is_logged_kept_and_survives_resume(quick_config, tmp_path, monkeypatch):
    from genesis_train.checkpointing import checkpoint_root, list_checkpoints
    from genesis_train.metrics import read_metrics
    from genesis_train.trainer import Trainer

    monkeypatch.setattr(Trainer, "evaluate", synthetic_validation)
    messages = []
    straight = grokking_config(quick_config, tmp_path / "straight")
    Trainer(straight, log=messages.append).fit()
    events = read_metrics(straight.run_dir / "events.jsonl")
    assert [(e["step"], e["event"], e["metric"], e["before"], e["after"]) for e in events] == \
        [(26, "grokking", "val_loss_lm", 50.0, 30.0)]
    assert events[0]["checkpoint"] == "checkpoints/grokking-step-00000026"
    assert [r for r in read_metrics(straight.run_dir / "metrics.jsonl") if "event" in r] == events
    assert any(m.startswith("grokking event at step 26") for m in messages)
    # keep-last-K (K = 1) pruned the periodic checkpoints but not the event's.
    assert [p.name for p in list_checkpoints(straight.run_dir)] == ["step-00000040"]
    assert (checkpoint_root(straight.run_dir) / "grokking-step-00000026" / "model.safetensors").is_file()

    # The same run interrupted after its step-20 checkpoint, then resumed: the event comes at the same step.
    interrupted = grokking_config(quick_config, tmp_path / "resumed")

    # The interruption: training stops after step 20 (its checkpoint written), as step 21 begins.
    original = Trainer.train_step

    def train_until_20(self):
        if self.step == 20:
            raise StopAt
        return original(self)
    monkeypatch.setattr(Trainer, "train_step", train_until_20)
    with pytest.raises(StopAt):
        Trainer(interrupted, log=lambda *_: None).fit()
    monkeypatch.setattr(Trainer, "train_step", original)
    assert not (interrupted.run_dir / "events.jsonl").read_text()
    interrupted.resume = True
    Trainer(interrupted, log=lambda *_: None).fit()
    assert read_metrics(interrupted.run_dir / "events.jsonl") == events


# -- the detector on the curves recorded by examples/grokking.py (configs/grokking.toml) ----------------------------

def recorded_events(run, rule):
    """Replays a recorded run through the detector: validation accuracy at each evaluation, with the last train
    accuracy logged at or before it (the trainer's order)."""
    detector = GrokkingDetector(rule)
    train = sorted(run["train_accuracy"])
    found = []
    for point in run["evaluations"]:
        logged = [value for step, value in train if step <= point["step"]]
        if event := detector.add(point["step"], point["val_accuracy_lm"], logged[-1] if logged else None):
            found.append(event["step"])
    return found


def test_detector_on_the_recorded_grokking_runs():
    import json
    import tomllib
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    config = tomllib.loads((repo / "configs" / "grokking.toml").read_text())
    rule = GrokkingRule(metric=config["grokking_metric"])  # the defaults: the config sets no window
    runs = json.loads((Path(__file__).parent / "fixtures" / "grokking_runs.json").read_text())["runs"]
    grokking = runs["grokking"]
    found = recorded_events(grokking, rule)
    assert found == grokking["events"]  # the replay agrees with what the run itself logged
    assert len(found) >= 1
    assert grokking["train_accuracy_99"] < found[0] <= grokking["val_accuracy_90"]
    assert recorded_events(runs["control"], rule) == [] == runs["control"]["events"]
