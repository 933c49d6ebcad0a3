from pathlib import Path

import pytest

from genesis_model import PRESETS, GenesisLM, GenesisTokenizer, generate, load_pretrained, save_pretrained
from genesis_model.cli import generate_main, main, presets_table

README = Path(__file__).parents[2] / "packages" / "genesis-model" / "README.md"


def test_presets_lists_every_preset_with_its_real_parameter_count(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:len(PRESETS) + 1]}
    assert rows.keys() == PRESETS.keys()
    assert rows["tiny"][:7] == ["tiny", "6", "256", "4", "4", "688", "6.8M"]
    assert rows["deep_narrow_32"][6] == f"{PRESETS['deep_narrow_32'].num_parameters() / 1e6:.1f}M" == "162.9M"
    assert "batch 8" in out


def test_readme_carries_the_current_presets_table():
    assert presets_table(batch_size=8, seq_len=None, markdown=True) in README.read_text()


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


def test_generate_runs_where_only_kernels_and_model_are_installed(checkpoint, tmp_path):
    """A throwaway virtual environment gets genesis-kernels and genesis-model (real, non-editable installs) and
    sees this environment's third-party packages (torch, safetensors, tokenizers) but no genesis-data or
    genesis-train; its genesis-generate must load the checkpoint and generate."""
    import importlib.util
    import os
    import site
    import subprocess
    import sys

    repo = Path(__file__).parents[2]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    # Plain directory lines: the editable-install .pth files inside them are not processed, so no genesis package
    # leaks in from here.
    Path(venv_site, "third_party.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    offline = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", *offline,
                    str(repo / "packages" / "genesis-kernels"), str(repo / "packages" / "genesis-model")],
                   check=True, capture_output=True, text=True, timeout=300)

    probe = ("import importlib.util, genesis_model; "
             "print(genesis_model.__file__); "
             "print([m for m in ('genesis_data', 'genesis_train') if importlib.util.find_spec(m)])")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where, leaked = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True,
                                   env=env).stdout.split("\n")[:2]
    assert where.startswith(venv_site) and leaked == "[]"

    result = subprocess.run([str(venv / "bin" / "genesis-generate"), "--checkpoint", str(checkpoint), "--prompt",
                             "In the beginning", "--max-new-tokens", "8"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    tokenizer = GenesisTokenizer.from_pretrained(checkpoint)
    new = generate(load_pretrained(checkpoint), [tokenizer.encode("In the beginning")], 8,
                   stop_tokens=[tokenizer.eos_id])[0]
    assert result.stdout == "In the beginning" + tokenizer.decode(new) + "\n"
