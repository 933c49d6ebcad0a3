import json
import math
import random
import struct

import pytest

from genesis_train.plot import ALL_TASKS, comparison_plot, load_run, main, run_panels, spans_decades, task_names

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = ("lm", "coherence", "xref", "paraphrase")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def synthetic_records(steps=3000, grok_step=2100, seed=0):
    """A run's metrics as the trainer and its callbacks log them: train metrics every 50 steps, validation every
    250, probes every 500, plus keys the plot does not know (they must not break it)."""
    rng = random.Random(seed)
    records = []
    for step in range(0, steps + 1, 50):
        record = {"step": step}
        grokked = 1 / (1 + math.exp(-(step - grok_step) / 80))
        if step:
            for i, task in enumerate(TASKS):
                record[f"loss_{task}"] = 0.05 + 6 * math.exp(-step / (300 * (i + 1))) * rng.uniform(0.8, 1.2)
                if task != "lm":
                    record[f"accuracy_{task}"] = 0.3 + 0.65 * grokked + rng.uniform(-0.03, 0.03)
            record.update(lr=3e-3 * min(1, step / 200), tokens_per_s=rng.uniform(9e4, 1e5), mfu=rng.uniform(.3, .4),
                          grad_norm=rng.uniform(0.5, 2.0), weight_norm=40 + step / 100, data_seconds=0.01,
                          note="a string value")
            record.update({f"weight_norm_block_{b:02d}": 10 + b + step / (300 + 100 * b) for b in range(3)})
        if step % 250 == 0:
            for task in TASKS:
                record[f"val_loss_{task}"] = 0.3 + 6 * math.exp(-step / 400) + (0.5 * (1 - grokked) if task != "lm"
                                                                                else 0)
                if task != "lm":
                    record[f"val_accuracy_{task}"] = 0.25 + 0.7 * grokked
            record.update(val_ppl_lm=math.exp(record["val_loss_lm"]), eval_seconds=1.5)
        if step % 500 == 0:
            record.update(alignment_distance=1.0 - 0.5 * grokked, alignment_distance_shuffled=1.2,
                          alignment_ratio=(1.0 - 0.5 * grokked) / 1.2, concepts_silhouette=0.05 + 0.4 * grokked,
                          concepts_silhouette_shuffled=0.02)
        records.append(record)
    return records


GROKKING = {"step": 2100, "event": "grokking", "metric": "val_loss_lm", "before": 4.1, "after": 3.2}


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "grok-run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", synthetic_records())
    write_jsonl(run / "events.jsonl", [GROKKING])
    return run


def png_size(path):
    """(width, height) from the IHDR chunk, which follows the signature and the chunk's length and type."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_full_run_writes_png(run_dir, capsys):
    assert main([str(run_dir)]) == 0
    out = run_dir / "plot.png"
    assert capsys.readouterr().out.strip() == str(out)
    width, height = png_size(out)
    assert width >= 600 and height >= 600
    assert out.stat().st_size > 20_000
    assert sorted(p.name for p in run_dir.iterdir()) == ["events.jsonl", "metrics.jsonl", "plot.png"]  # no temp file


def test_full_run_panels(run_dir):
    titles = [p.title for p in run_panels(load_run(run_dir))]
    # Tasks with accuracies pair up first (lm has loss only); then the probes, norms and schedule.
    assert titles == ["coherence: loss", "coherence: accuracy", "xref: loss", "xref: accuracy",
                      "paraphrase: loss", "paraphrase: accuracy", "lm: loss", "alignment", "concepts",
                      "weight norm", "gradient norm", "learning rate", "throughput"]
    weight_norms = next(p for p in run_panels(load_run(run_dir)) if p.title == "weight norm")
    assert [x.label for x in weight_norms.lines] == ["total", "block 00", "block 01", "block 02"]


def test_out_option(run_dir, tmp_path):
    out = tmp_path / "elsewhere.png"
    assert main([str(run_dir), "--out", str(out)]) == 0
    assert png_size(out) and not (run_dir / "plot.png").exists()


def test_loss_only_run(tmp_path):
    run = tmp_path / "tiny"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"step": 0, "val_loss_lm": 6.0}, {"step": 10, "loss_lm": 5.0},
                                        {"step": 20, "loss_lm": 4.0, "val_loss_lm": 4.5}])
    assert main([str(run)]) == 0
    width, height = png_size(run / "plot.png")
    assert width >= 600 and height >= 300


def test_events_from_events_file_else_metrics_lines(run_dir):
    assert load_run(run_dir).events == [GROKKING]
    (run_dir / "events.jsonl").unlink()
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({**GROKKING, "step": 1800}) + "\n")
    run = load_run(run_dir)
    assert [e["step"] for e in run.events] == [1800]
    assert all("event" not in r for r in run.records)  # event lines are not metrics


def test_comparison_plot(tmp_path):
    runs = []
    for seed, grok_step in enumerate((1500, 2100, 2600)):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        write_jsonl(run / "metrics.jsonl", synthetic_records(grok_step=grok_step, seed=seed))
        write_jsonl(run / "events.jsonl", [{**GROKKING, "step": grok_step}])
        runs.append(run)
    out = comparison_plot(runs, tmp_path / "compare.png",
                          ["accuracy_xref", "val_accuracy_xref", "loss_xref", "val_loss_xref", "never_logged"])
    assert out == tmp_path / "compare.png"
    width, height = png_size(out)
    assert width >= 600 and height >= 600


def test_task_names():
    # The unsuffixed val_loss (the mean over tasks) first, then known tasks in the trainer's order, then others;
    # timing keys and look-alikes are not tasks.
    keys = {"loss_zeta", "loss_xref", "val_loss", "loss_lm", "accuracy_lm_seconds", "weight_norm", "val_ppl_lm"}
    assert task_names(keys) == [ALL_TASKS, "lm", "xref", "zeta"]


def test_spans_decades():
    assert spans_decades([6.0, 0.3])
    assert not spans_decades([6.0, 1.0])
    assert not spans_decades([0.0, 5.0])  # no log axis through zero
    assert not spans_decades([])


def bad_missing_dir(tmp_path):
    return tmp_path / "nope", "nope: no such run directory"


def bad_no_metrics(tmp_path):
    return tmp_path, "metrics.jsonl: no such file"


def bad_empty_metrics(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n")
    return tmp_path, "metrics.jsonl: empty"


def bad_json_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss_lm": 5}\n{"step": 1, "loss_lm": 4}\n{"step": 2, lo\n')
    return tmp_path, "metrics.jsonl:3: not JSON"


def bad_events_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "loss_lm": 5}\n')
    (tmp_path / "events.jsonl").write_text('{"event": "grokking"}\n')
    return tmp_path, 'events.jsonl:1: expected a JSON object with a numeric "step"'


def bad_nothing_to_plot(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "data_seconds": 0.1}\n')
    return tmp_path, "metrics.jsonl: no metric this command plots (keys: data_seconds, step)"


@pytest.mark.parametrize("case", [bad_missing_dir, bad_no_metrics, bad_empty_metrics, bad_json_line,
                                  bad_events_line, bad_nothing_to_plot])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    run, message = case(tmp_path)
    assert main([str(run)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genesis-train plot: error: ") and message in err[0], err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.tmp"))


def test_unwritable_out_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    out = tmp_path / "missing-folder" / "plot.png"
    assert main([str(run_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing-folder" in err[0], err
    assert not list(tmp_path.rglob("*.png"))
