"""Every bad input to genesis-generate, one row each: exit status 2, one line on stderr naming the culprit (the option,
or the checkpoint's file and field), no traceback, and nothing allocated for an absurd configuration."""

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from genesis_model import GenesisLM, save_pretrained
from genesis_model.checkpoint import CONFIG_FILE
from genesis_model.cli import generate_main


@pytest.fixture
def checkpoint(tmp_path, make_config, tokenizer_file):
    return save_pretrained(GenesisLM(make_config(vocab_size=300, max_seq_len=64)), tmp_path / "ckpt",
                           tokenizer_file=tokenizer_file)


def set_config(**fields):
    """A change to config.json's model configuration."""
    def damage(directory):
        meta = json.loads((directory / CONFIG_FILE).read_text())
        meta["config"].update(fields)
        (directory / CONFIG_FILE).write_text(json.dumps(meta))  # json writes nan as NaN, which json reads back
    return damage


CONFIG = r".*ckpt/config\.json: "
# Each row: an id, a change to the checkpoint, extra options, and a pattern for the message after
# "genesis-generate: error: ".
ROWS = [
    ("n-layers-a-word", set_config(n_layers="six"), [], CONFIG + r"ModelConfig\.n_layers must be a positive integer, "
                                                             r"got 'six'$"),
    ("d-model-a-word", set_config(d_model="wide", d_mlp=None), [], CONFIG + r"ModelConfig\.d_model must be a "
                                                                            r"positive integer, got 'wide'$"),
    ("d-model-negative", set_config(d_model=-32), [], CONFIG + r"ModelConfig\.d_model must be a positive integer"),
    ("n-heads-a-float", set_config(n_heads=4.0), [], CONFIG + r"ModelConfig\.n_heads must be a positive integer, "
                                                              r"got 4\.0$"),
    ("rope-theta-a-word", set_config(rope_theta="big"), [], CONFIG + r"ModelConfig\.rope_theta must be a finite "
                                                                     r"number > 0, got 'big'$"),
    ("norm-eps-nan", set_config(norm_eps=math.nan), [], CONFIG + r"ModelConfig\.norm_eps must be a finite number > 0"),
    ("tie-embeddings-a-word", set_config(tie_embeddings="yes"), [], CONFIG + r"ModelConfig\.tie_embeddings must be "
                                                                             r"true or false, got 'yes'$"),
    ("norm-position-a-number", set_config(norm_position=3), [], CONFIG + r"ModelConfig\.norm_position must be one of"),
    ("unknown-field", set_config(n_experts=8), [], CONFIG + r"unknown model config field\(s\) n_experts$"),
    ("billion-layers", set_config(n_layers=10**9), [], CONFIG + r"this model needs .* of memory, more than the .* "
                                                               r"free on cpu; most of it is the layers "
                                                               r"\(n_layers=1000000000, "),
    ("huge-max-seq-len", set_config(max_seq_len=10**12), [], CONFIG + r"this model needs .* most of it is the rotary "
                                                                     r"tables \(max_seq_len=1000000000000, "),
    ("huge-vocab", set_config(vocab_size=10**13), [], CONFIG + r"this model needs .* most of it is the embeddings "
                                                              r"\(vocab_size=10000000000000, "),
    ("config-not-json", lambda d: (d / CONFIG_FILE).write_bytes(b"\x89PNG\x00"), [], CONFIG + "not valid JSON"),
    ("temperature-nan", None, ["--temperature", "nan"], r"^--temperature must be >= 0 and finite .*got nan$"),
    ("temperature-negative", None, ["--temperature", "-1"], r"^--temperature must be >= 0 and finite"),
    ("top-p-zero", None, ["--top-p", "0"], r"^--top-p must be in \(0, 1\], got 0\.0$"),
    ("top-k-zero", None, ["--top-k", "0"], r"^--top-k must be >= 1, got 0$"),
    ("max-new-tokens-zero", None, ["--max-new-tokens", "0"], r"^--max-new-tokens must be >= 1, got 0$"),
    ("max-new-tokens-past-the-context", None, ["--max-new-tokens", "1000"], r"exceeds the model's max_seq_len=64"),
    ("device-unknown", None, ["--device", "abacus"], r"^--device abacus: "),
]


def listing(directory):
    return sorted((p.name, p.stat().st_size) for p in directory.iterdir())


@pytest.mark.parametrize("damage, options, message", [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_is_one_line_naming_the_culprit(damage, options, message, checkpoint, capsys):
    if damage is not None:
        damage(checkpoint)
    before = listing(checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--checkpoint", str(checkpoint), "--prompt", "light", "--device", "cpu", *options])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert exit_info.value.code == 2
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("genesis-generate: error: "), lines
    assert re.search(message, lines[0].removeprefix("genesis-generate: error: ")), lines[0]
    assert listing(checkpoint) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA")
def test_cuda_without_a_gpu_is_named(checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--checkpoint", str(checkpoint), "--prompt", "light", "--device", "cuda"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "genesis-generate: error: --device cuda: no CUDA device is available (use --device cpu)"]


def test_console_script_absurd_config_is_one_line_without_traceback(checkpoint):
    set_config(n_layers=10**9)(checkpoint)
    argv = ["--checkpoint", str(checkpoint), "--prompt", "light", "--device", "cpu"]
    command = f"import sys; from genesis_model.cli import generate_main; sys.exit(generate_main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", command], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "n_layers=1000000000" in proc.stderr, proc.stderr
