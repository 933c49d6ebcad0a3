"""Every bad input to genesis-train, one row each: the exit status, the one line on stderr (no traceback) that names
the culprit, and an out-dir left as it was. Every row fails before the first training step."""

import errno
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from genesis_train.cli import main

BIBLE_FIXTURES = Path(__file__).resolve().parents[1] / "genesis_data" / "fixtures" / "formats"


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def refuse_writes_in(monkeypatch, directory: Path, code: int, strerror: str) -> None:
    """What a read-only directory or file system does to the write probe, also for root (who may write anywhere)."""
    real = tempfile.TemporaryFile

    def probe(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == directory:
            raise OSError(code, strerror, str(directory))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", probe)


def read_only_dir(tmp: Path, monkeypatch, name: str) -> Path:
    directory = tmp / name
    directory.mkdir()
    directory.chmod(0o555)
    if os.geteuid() == 0:  # root ignores the mode bits
        refuse_writes_in(monkeypatch, directory, errno.EACCES, "Permission denied")
    return directory


def storage_error_during_training(monkeypatch, error: OSError) -> list[str]:
    """The run fails as a full or read-only disk fails it: with an OSError from a write, here raised at once."""
    def train(cfg, log=print):
        raise error

    monkeypatch.setattr("genesis_train.trainer.train", train)
    return []


# Each row: an id, a function (tmp_path, run dir, monkeypatch) -> extra argv, the exit status, and a pattern for the
# message after "genesis-train: error: ".
ROWS = [
    # --config
    ("config-is-a-directory", lambda t, r, m: ["--config", str(t)], 2, r"--config: .* is a directory; give a TOML"),
    ("config-is-binary", lambda t, r, m: ["--config", str(write(t / "model.bin", b"\x89PNG\r\n\x1a\n\x00\xff\xfe"))],
     2, r"--config: .*model\.bin is not a UTF-8 text file"),
    ("config-missing", lambda t, r, m: ["--config", str(t / "nope.toml")], 2, r"--config: .*nope\.toml does not exist"),
    ("config-not-toml", lambda t, r, m: ["--config", str(write(t / "bad.toml", "steps = [\n"))], 2,
     r"bad\.toml: not valid TOML"),
    ("toml-unknown-option", lambda t, r, m: ["--config", str(write(t / "bad.toml", "stepz = 3\n"))], 2,
     r"bad\.toml: unknown option 'stepz'"),
    ("toml-wrong-type", lambda t, r, m: ["--config", str(write(t / "bad.toml", "steps = 'many'\n"))], 2,
     r"bad\.toml: steps must be int, got 'many'"),
    ("toml-lr-nan", lambda t, r, m: ["--config", str(write(t / "run.toml", "lr = nan\n"))], 2,
     r"run\.toml: lr must be a finite number > 0, got nan$"),
    ("toml-beta2-in-a-table", lambda t, r, m: ["--config", str(write(t / "run.toml", "[optim]\nbeta2 = 1.0\n"))], 2,
     r"run\.toml: optim\.beta2 must be a finite number in \[0, 1\), got 1\.0$"),
    # numbers: finite and in range
    ("lr-nan", lambda t, r, m: ["--lr", "nan"], 2, r"^--lr must be a finite number > 0, got nan$"),
    ("lr-inf", lambda t, r, m: ["--lr", "inf"], 2, r"^--lr must be a finite number > 0, got inf$"),
    ("lr-zero", lambda t, r, m: ["--lr", "0"], 2, r"^--lr must be a finite number > 0, got 0\.0$"),
    ("min-lr-nan", lambda t, r, m: ["--min-lr", "nan"], 2, r"^--min-lr must be a finite number >= 0, got nan$"),
    ("min-lr-above-lr", lambda t, r, m: ["--lr", "1e-4", "--min-lr", "1e-3"], 2,
     r"^--min-lr must be <= --lr .*got min_lr=0\.001, lr=0\.0001$"),
    ("beta1-1.5", lambda t, r, m: ["--beta1", "1.5"], 2, r"^--beta1 must be a finite number in \[0, 1\), got 1\.5$"),
    ("beta2-nan", lambda t, r, m: ["--beta2", "nan"], 2, r"^--beta2 must be a finite number in \[0, 1\), got nan$"),
    ("weight-decay-negative", lambda t, r, m: ["--weight-decay", "-0.1"], 2,
     r"^--weight-decay must be a finite number >= 0, got -0\.1$"),
    ("weight-decay-inf", lambda t, r, m: ["--weight-decay", "inf"], 2, r"^--weight-decay must be .*, got inf$"),
    ("grad-clip-negative", lambda t, r, m: ["--grad-clip", "-1"], 2,
     r"^--grad-clip must be a finite number >= 0 \(0 turns clipping off\), got -1\.0$"),
    ("grad-clip-nan", lambda t, r, m: ["--grad-clip", "nan"], 2, r"^--grad-clip must be .*, got nan$"),
    ("task-weight-nan", lambda t, r, m: ["--task-lm", "nan"], 2, r"^--task-lm must be a finite number >= 0"),
    ("task-weight-negative", lambda t, r, m: ["--task-xref", "-1"], 2, r"^--task-xref must be a finite number >= 0"),
    ("task-weights-all-zero", lambda t, r, m: ["--task-lm", "0", "--task-coherence", "0", "--task-xref", "0",
                                               "--task-paraphrase", "0"], 2, r"^task weights .* positive sum$"),
    ("train-fraction-1.5", lambda t, r, m: ["--dataset", "modular", "--train-fraction", "1.5"], 2,
     r"^--train-fraction must be a fraction between 0 and 1 \(exclusive\), got 1\.5$"),
    ("modulus-1", lambda t, r, m: ["--dataset", "modular", "--modulus", "1"], 2,
     r"^--modulus must be an integer >= 2, got 1$"),
    ("seed-negative", lambda t, r, m: ["--seed", "-1"], 2, r"^--seed must be an integer in \[0, 2\*\*64\), got -1$"),
    ("steps-negative", lambda t, r, m: ["--steps", "-3"], 2, r"^--steps must be a positive integer, got -3$"),
    ("block-size-negative", lambda t, r, m: ["--block-size", "-1"], 2, r"^--block-size must be an integer >= 0"),
    ("warmup-negative", lambda t, r, m: ["--warmup-steps", "-1"], 2, r"^--warmup-steps must be an integer >= 0"),
    ("grokfast-alpha-nan", lambda t, r, m: ["--grokfast-alpha", "nan"], 2, r"^--grokfast-alpha must be a finite"),
    ("grokfast-lamb-inf", lambda t, r, m: ["--grokfast-lamb", "inf"], 2, r"^--grokfast-lamb must be a finite"),
    ("grokking-threshold-nan", lambda t, r, m: ["--grokking-threshold", "nan"], 2,
     r"^--grokking-threshold must be a fraction between 0 and 1 \(exclusive\), got nan$"),
    ("checkpoint-interval-negative", lambda t, r, m: ["--checkpoint-interval", "-1"], 2,
     r"^--checkpoint-interval must be an integer >= 0 \(0: min\(500, steps / 4\)\), got -1$"),
    # the machine
    ("cuda-without-a-gpu", lambda t, r, m: (m.setattr("torch.cuda.is_available", lambda: False),
                                            ["--device", "cuda"])[1], 2,
     r"^--device cuda: this machine has no CUDA device .*; use configs/cpu\.toml or --device cpu --dtype float32$"),
    ("float16-on-the-cpu", lambda t, r, m: ["--dtype", "float16"], 2,
     r"^--dtype float16 on the CPU: float16 training is for GPUs .*; use --dtype float32"),
    ("mode-unknown", lambda t, r, m: ["--mode", "nope"], 2, r"^--mode 'nope' is not a preset"),
    # directories and files
    ("out-dir-empty", lambda t, r, m: ["--out-dir", ""], 2, r"^--out-dir must not be empty"),
    ("out-dir-is-a-file", lambda t, r, m: ["--out-dir", str(write(r, "not a directory"))], 2,
     r"^--out-dir: .*run is a file, not a directory; choose another --out-dir$"),
    ("out-dir-under-a-file", lambda t, r, m: ["--out-dir", str(write(r, "x") / "sub")], 2,
     r"^--out-dir: .*run/sub cannot be made: .*run is a file, not a directory"),
    ("out-dir-read-only", lambda t, r, m: ["--out-dir", str(read_only_dir(t, m, "locked") / "run")], 2,
     r"^--out-dir: cannot write in .*locked \(Permission denied\); choose another --out-dir$"),
    ("out-dir-read-only-file-system", lambda t, r, m: (refuse_writes_in(m, t, errno.EROFS, "Read-only file system"),
                                                       ["--out-dir", str(t / "new")])[1], 2,
     r"^--out-dir: cannot write in .* \(Read-only file system\)"),
    ("cache-dir-is-a-file", lambda t, r, m: ["--cache-dir", str(write(t / "cache", "x"))], 2,
     r"^--cache-dir: .*cache is a file, not a directory; choose another with --cache-dir$"),
    ("cache-dir-read-only", lambda t, r, m: ["--cache-dir", str(read_only_dir(t, m, "cache"))], 2,
     r"^--cache-dir: cannot write in .*cache \(Permission denied\)"),
    ("bible-dir-missing", lambda t, r, m: ["--bible-dir", str(t / "bibles")], 2, r"^--bible-dir: .* does not exist$"),
    ("bible-dir-is-a-file", lambda t, r, m: ["--bible-dir", str(write(t / "kjv.txt", "x"))], 2,
     r"^--bible-dir: .*kjv\.txt is not a directory$"),
    ("text-file-is-a-directory", lambda t, r, m: ["--text-file", str(t)], 2, r"^--text-file: .* is not a file$"),
    ("cross-references-is-a-directory", lambda t, r, m: ["--cross-references", str(t)], 2,
     r"^--cross-references: .* is not a file$"),
    ("text-file-of-one-word", lambda t, r, m: ["--text-file", str(write(t / "word.txt", "Jesus\n"))], 2,
     r"^no task can be sampled from .*word\.txt: "),
    ("bible-file-malformed", lambda t, r, m: [
        "--bible-dir", str(write(t / "bibles" / "Broken.txt", "### Genesis\n\n[1:1] In the beginning\n[1:two] God\n")
                           .parent)], 2, r"Broken\.txt:4"),
    # the machine's storage refusing a write mid-run
    ("disk-full", lambda t, r, m: storage_error_during_training(
        m, OSError(errno.ENOSPC, "No space left on device", str(r / "checkpoints" / "model.safetensors"))), 1,
     r"^disk full while writing .*run/checkpoints/model\.safetensors \(free space or choose another --out-dir\)$"),
    ("disk-full-writing-an-open-file", lambda t, r, m: storage_error_during_training(
        m, OSError(errno.ENOSPC, "No space left on device")), 1, r"^disk full while writing under .*run \(free space"),
    ("permission-denied-mid-run", lambda t, r, m: storage_error_during_training(
        m, PermissionError(errno.EACCES, "Permission denied", str(r / "metrics.jsonl"))), 1,
     r"^permission denied: .*run/metrics\.jsonl"),
    ("read-only-file-system-mid-run", lambda t, r, m: storage_error_during_training(
        m, OSError(errno.EROFS, "Read-only file system", str(r / "metrics.jsonl"))), 1,
     r"^read-only file system while writing .*run/metrics\.jsonl"),
]


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file and folder at or under `path`, with the files' bytes."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() if p.is_file() else None for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("make_args, status, message", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_is_one_line_naming_the_culprit(make_args, status, message, tmp_path, cache_dir, monkeypatch,
                                                   capsys):
    run = tmp_path / "run"
    extra = make_args(tmp_path, run, monkeypatch)
    # The out-dir an option names, else `run`: what it held before is what it holds after.
    out_dir = Path(extra[extra.index("--out-dir") + 1]) if "--out-dir" in extra else run
    before = snapshot(out_dir)
    argv = ["--steps", "2", "--block-size", "64", "--vocab-size", "512", "--device", "cpu", "--no-progress",
            "--cache-dir", str(cache_dir), "--out-dir", str(run), *extra]  # a later option wins
    assert main(argv) == status
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("genesis-train: error: "), err
    assert re.search(message, lines[0].removeprefix("genesis-train: error: ")), lines[0]
    assert snapshot(out_dir) == before


@pytest.mark.parametrize("argv, message", [
    (["--lr", "nan"], "genesis-train: error: --lr must be a finite number > 0, got nan"),
    (["--config", "."], "genesis-train: error: --config: . is a directory; give a TOML file (e.g. configs/cpu.toml)"),
])
def test_console_script_prints_one_line_without_traceback(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genesis_train.cli", "--out-dir", str(tmp_path / "run"), *argv],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [message]
    assert not (tmp_path / "run").exists()
