import dataclasses
import subprocess
import sys

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
