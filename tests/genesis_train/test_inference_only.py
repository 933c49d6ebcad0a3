"""A checkpoint written by genesis-train loads and generates where only genesis-kernels and genesis-model are
installed: a throwaway virtual environment, installed from the package sources with their declared
dependencies, proves the dependency direction (nothing pulls in genesis-data or genesis-train)."""

import os
import subprocess
import venv
from pathlib import Path

import pytest

from genesis_model import GenesisTokenizer, generate, load_pretrained
from genesis_train.trainer import train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_checkpoint_generates_with_only_kernels_and_model_installed(quick_config, tmp_path):
    checkpoint = train(quick_config(steps=2, eval_interval=2, checkpoint_interval=2), log=lambda *_: None)["checkpoint"]
    env_dir = tmp_path / "inference-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # torch pinned as in hatch.toml so pip takes the local CPU wheel; the packages themselves leave torch open.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "torch==2.13.0",
                    str(REPO / "packages/genesis-kernels"), str(REPO / "packages/genesis-model")], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    probe = "import importlib.util as u; print([m for m in ('genesis_data', 'genesis_train') if u.find_spec(m)])"
    leaked = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, env=env, check=True).stdout
    assert leaked.strip() == "[]"

    proc = subprocess.run([str(env_dir / "bin" / "genesis-generate"), "--checkpoint", str(checkpoint),
                           "--prompt", "In the beginning", "--max-new-tokens", "8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # the same greedy continuation as generating in this process
    tokenizer = GenesisTokenizer.from_pretrained(checkpoint)
    new = generate(load_pretrained(checkpoint), [tokenizer.encode("In the beginning")], 8,
                   stop_tokens=[tokenizer.eos_id])[0]
    assert proc.stdout == "In the beginning" + tokenizer.decode(new) + "\n"
