import subprocess
import sys
from pathlib import Path

import pytest

from genesis_model import PRESETS, GenesisLM, GenesisTokenizer, generate, load_pretrained, save_pretrained
from genesis_model.cli import generate_main, main, presets_table

REPO = Path(__file__).parents[2]
READMES = [REPO / "packages" / "genesis-model" / "README.md", REPO / "README.md"]


def markdown_rows(text: str) -> dict[str, dict[str, str]]:
    """A Markdown table's rows by their first cell, each a dict keyed by the header's names."""
    lines = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0]]
    return {cells[0].strip(): dict(zip(header, (c.strip() for c in cells))) for cells in lines[2:]}


def test_presets_lists_every_preset_with_its_real_parameter_count(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()[1:len(PRESETS) + 1]] == list(PRESETS)
    assert "batch 8" in out
    assert main(["presets", "--markdown"]) == 0
    rows = markdown_rows(capsys.readouterr().out)
    assert rows.keys() == PRESETS.keys()
    tiny = rows["tiny"]
    assert [tiny[name] for name in ("layers", "width", "heads", "kv", "mlp", "params")] == \
        ["6", "256", "4", "4", "688", "6.8M"]
    # deep_narrow_32 by hand: 8192 x 640 tied embedding; 32 layers of q, k, v, o (4 x 640^2), gate/up/down
    # (3 x 640 x 1712) and two norms (DeepNorm's post-norm blocks: no final norm).
    params = 8192 * 640 + 32 * (4 * 640 * 640 + 3 * 640 * 1712 + 2 * 640)
    assert rows["deep_narrow_32"]["params"] == f"{params / 1e6:.1f}M" == "162.9M"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_readme_carries_the_current_presets_table(readme):
    assert presets_table(batch_size=8, seq_len=None, markdown=True) in readme.read_text()


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`genesis-model presets | head -1`: the closed pipe ends the command quietly, with SIGPIPE's status."""
    command = "import sys; from genesis_model.cli import main; sys.exit(main(['presets']))"
    process = subprocess.Popen([sys.executable, "-c", command], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line
    errors = process.stderr.read()
    assert process.wait() == 141 and errors == b""


def test_presets_rejects_a_bad_batch(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["presets", "--batch-size", "0"])
    assert exit_info.value.code == 2 and "--batch-size" in capsys.readouterr().err


@pytest.fixture
def checkpoint(tmp_path, make_config, tokenizer_file):
    model = GenesisLM(make_config(vocab_size=300, max_seq_len=64))
    return save_pretrained(model, tmp_path / "ckpt", tokenizer_file=tokenizer_file)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generate_streams_the_greedy_continuation(checkpoint, capsys, dtype):
    import torch

    assert generate_main(["--checkpoint", str(checkpoint), "--prompt", "In the beginning", "--max-new-tokens", "12",
                          "--dtype", dtype]) == 0
    tokenizer = GenesisTokenizer.from_pretrained(checkpoint)
    model = load_pretrained(checkpoint, dtype=getattr(torch, dtype))
    new = generate(model, [tokenizer.encode("In the beginning")], 12, stop_tokens=[tokenizer.eos_id])[0]
    assert capsys.readouterr().out == "In the beginning" + tokenizer.decode(new) + "\n"


def test_generate_sampling_options_are_reproducible(checkpoint, capsys):
    argv = ["--checkpoint", str(checkpoint), "--prompt", "God", "--temperature", "0.9", "--top-k", "40",
            "--top-p", "0.95", "--seed", "3", "--max-new-tokens", "10"]
    generate_main(argv)
    first = capsys.readouterr().out
    generate_main(argv)
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("argv_tail, message", [
    (["--temperature", "-1"], "temperature must be >= 0"),
    (["--max-new-tokens", "1000"], "exceeds the model's max_seq_len=64"),
])
def test_generate_bad_options_exit_cleanly(checkpoint, capsys, argv_tail, message):
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--checkpoint", str(checkpoint), "--prompt", "light", *argv_tail])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "model.safetensors: unreadable safetensors"),
    (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json: tokenizer file not found"),
    (lambda d: (d / "config.json").unlink(), "config.json: missing"),
])
def test_generate_bad_checkpoint_exits_with_one_line(checkpoint, capsys, damage, message):
    damage(checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        generate_main(["--checkpoint", str(checkpoint), "--prompt", "light"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and message in err[-1] and str(checkpoint) in err[-1]
    assert not any("Traceback" in line for line in err)

