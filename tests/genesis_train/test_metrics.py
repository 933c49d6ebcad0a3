import json

import pytest

from genesis_train.metrics import RunLog, read_metrics

pytest.importorskip("tensorboard")


def scalars(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    values = {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}
    return values, accumulator


def test_run_log_writes_jsonl_events_and_tensorboard(tmp_path):
    log = RunLog(tmp_path, tensorboard=True)
    log.write({"step": 0, "val_loss_lm": 6.0})
    log.write({"step": 10, "loss_lm": 5.0, "weight_norm": 12.5, "note": "text is not a scalar"})
    event = {"step": 10, "event": "grokking", "metric": "val_loss_lm", "before": 6.0, "after": 5.0}
    log.write(event)
    log.close()
    assert read_metrics(tmp_path / "metrics.jsonl")[-1] == event
    assert read_metrics(tmp_path / "events.jsonl") == [event]
    values, accumulator = scalars(tmp_path / "tensorboard")
    assert values["val_loss_lm"] == [(0, 6.0)] and values["loss_lm"] == [(10, 5.0)]
    assert values["weight_norm"] == [(10, 12.5)] and "note" not in values
    [text] = accumulator.Tensors("events/grokking/text_summary")
    assert json.loads(text.tensor_proto.string_val[0].decode()) == event


def test_resume_drops_what_came_after_the_checkpoint(tmp_path):
    log = RunLog(tmp_path, tensorboard=True)
    for step in (10, 20, 30):
        log.write({"step": step, "loss_lm": float(step)})
    log.write({"step": 30, "event": "grokking"})
    log.close()
    resumed = RunLog(tmp_path, tensorboard=True, resume_step=20)
    resumed.write({"step": 30, "loss_lm": 3.0})
    resumed.close()
    assert [(r["step"], r["loss_lm"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == \
        [(10, 10.0), (20, 20.0), (30, 3.0)]
    assert read_metrics(tmp_path / "events.jsonl") == []
    values, _ = scalars(tmp_path / "tensorboard")
    assert values["loss_lm"] == [(10, 10.0), (20, 20.0), (30, 3.0)]
