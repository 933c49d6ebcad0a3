"""A checkpoint written by genesis-train loads and generates where only genesis-model was installed, from the wheels
that `hatch run wheels` builds (hatch.toml): a throwaway virtual environment proves the dependency direction
(genesis-model brings genesis-kernels, nothing pulls in genesis-data or genesis-train), that no warning is printed,
and that genesis-model's README example runs as written."""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

from genesis_model import GenesisTokenizer, generate, load_pretrained
from genesis_train.trainer import train

REPO = Path(__file__).resolve().parents[2]
README_CHECKPOINT = "runs/tiny/checkpoints/step-00000200"


def build_wheels(folder: Path) -> list[str]:
    """Runs hatch.toml's `wheels` script (with this interpreter) into `folder`; returns the wheels' file names."""
    script = tomllib.loads((REPO / "hatch.toml").read_text())["envs"]["default"]["scripts"]["wheels"]
    command = shlex.split(script.replace("{args:dist}", str(folder)))
    assert command[0] == "python"
    subprocess.run([sys.executable, *command[1:]], cwd=REPO, check=True)
    return sorted(p.name for p in folder.glob("*.whl"))


def readme_example() -> str:
    """The Python block after the marker in genesis-model's README."""
    text = (REPO / "packages/genesis-model/README.md").read_text()
    return re.search(r"<!-- the inference example -->\n```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.slow
def test_wheels_install_genesis_model_alone_and_generate(quick_config, tmp_path):
    checkpoint = train(quick_config(steps=2, eval_interval=2, checkpoint_interval=2), log=lambda *_: None)["checkpoint"]
    wheels = build_wheels(tmp_path / "dist")
    assert [name.split("-")[0] for name in wheels] == ["genesis_data", "genesis_kernels", "genesis_model",
                                                       "genesis_train"]

    env_dir = tmp_path / "inference-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # torch pinned as in hatch.toml so pip takes the local CPU wheel; the packages themselves leave torch open.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--find-links",
                    str(tmp_path / "dist"), "torch==2.13.0", "genesis-model"], check=True)
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    installed = {package["name"] for package in json.loads(listed)}
    assert {"genesis-kernels", "genesis-model", "numpy"} <= installed
    assert not {"genesis-data", "genesis-train"} & installed

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    proc = subprocess.run([str(env_dir / "bin" / "genesis-generate"), "--checkpoint", str(checkpoint),
                           "--prompt", "In the beginning", "--max-new-tokens", "8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no warning (torch's "Failed to initialize NumPy" came when numpy was missing)
    # the same greedy continuation as generating in this process
    tokenizer = GenesisTokenizer.from_pretrained(checkpoint)
    new = generate(load_pretrained(checkpoint), [tokenizer.encode("In the beginning")], 8,
                   stop_tokens=[tokenizer.eos_id])[0]
    assert proc.stdout == "In the beginning" + tokenizer.decode(new) + "\n"

    # genesis-model's README example, as written, on this checkpoint in place of the quick start's
    example = readme_example()
    assert README_CHECKPOINT in example
    proc = subprocess.run([str(python), "-c", example.replace(README_CHECKPOINT, str(checkpoint))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    new = generate(load_pretrained(checkpoint), [tokenizer.encode("In the beginning")], 20,
                   stop_tokens=[tokenizer.eos_id])[0]
    assert proc.stdout == "In the beginning" + tokenizer.decode(new) + "\n"
