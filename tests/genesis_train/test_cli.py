import dataclasses
import subprocess
import sys

import pytest

from genesis_train.cli import build_parser, main
from genesis_train.config import TrainConfig


def test_help_documents_every_option():
    text = build_parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
        assert f.metadata["help"].split()[0] in text


def test_user_mistake_is_one_line_and_exit_2(capsys):
    assert main(["--steps", "-3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["genesis-train: error: --steps must be a positive integer, got -3"]


def test_console_script_bad_mode_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genesis_train.cli", "--mode", "nope", "--steps", "1",
                           "--out-dir", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "--mode 'nope' is not a preset" in proc.stderr


def test_malformed_bible_file_names_file_and_line(tmp_path, capsys):
    bibles = tmp_path / "bibles"
    bibles.mkdir()
    (bibles / "Broken.txt").write_text("### Genesis\n\n[1:1] In the beginning\n[1:two] God created\n")
    assert main(["--bible-dir", str(bibles), "--steps", "1", "--out-dir", str(tmp_path / "run"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{bibles / 'Broken.txt'}:4" in err[0], err
    assert not (tmp_path / "run").exists()  # nothing half-written


@pytest.mark.parametrize("options, message", [
    (["--detect-grokking", "--grokking-metric", "val_loss_qa"],
     "--grokking-metric 'val_loss_qa' is not a validation metric of this run; choose one of val_loss_lm, "),
    (["--detect-grokking", "--grokking-threshold", "1.5"],
     "--grokking-threshold must be a fraction between 0 and 1 (exclusive), got 1.5"),
    (["--detect-grokking", "--grokking-window", "50"], "--grokking-window 50 must span at least two evaluations"),
    (["--detect-grokking", "--grokking-span", "0"], "--grokking-span must be a positive integer, got 0"),
    (["--alignment-every", "10", "--alignment-pair", "ASV,LXX"],
     "--alignment-pair: LXX is not a translation of the corpus; choose from ASV, KJV, WEB"),
    (["--alignment-pair", "ASV"], "--alignment-pair must be two translation names as NAME,NAME, got 'ASV'"),
    (["--concepts", "missing.toml"], "--concepts: missing.toml does not exist"),
])
def test_research_options_are_checked_before_training(options, message, tmp_path, cache_dir, capsys):
    run = tmp_path / "run"
    assert main(["--steps", "2", "--block-size", "64", "--vocab-size", "512", "--device", "cpu",
                 "--cache-dir", str(cache_dir), "--out-dir", str(run), *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genesis-train: error: {message}"), err
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()


def test_concepts_file_that_is_not_toml(tmp_path, cache_dir, capsys):
    bad = tmp_path / "groups.toml"
    bad.write_text("[groups\nlove = ['love'\n")
    assert main(["--steps", "2", "--block-size", "64", "--vocab-size", "512", "--device", "cpu",
                 "--cache-dir", str(cache_dir), "--out-dir", str(tmp_path / "run"), "--concepts", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"genesis-train: error: --concepts: {bad}: "), err


def test_plot_subcommand(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "val_loss_lm": 6.0}\n{"step": 10, "loss_lm": 5.0, '
                                       '"val_loss_lm": 5.5}\n')
    assert main(["plot", str(run)]) == 0
    assert (run / "plot.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
