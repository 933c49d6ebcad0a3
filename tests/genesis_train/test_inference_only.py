"""A checkpoint written by genesis-train loads and generates where only genesis-kernels and genesis-model are
installed: a throwaway virtual environment, built from the package sources, proves the dependency direction."""

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from genesis_train.trainer import train

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_checkpoint_generates_with_only_kernels_and_model_installed(quick_config, tmp_path):
    checkpoint = train(quick_config(steps=2, eval_interval=2, checkpoint_interval=2), log=lambda *_: None)["checkpoint"]
    env_dir = tmp_path / "inference-venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # torch pinned as in hatch.toml so pip takes the local CPU wheel; the packages themselves leave torch open.
    subprocess.run([*pip, "torch==2.13.0", str(REPO / "packages/genesis-kernels"), str(REPO / "packages/genesis-model")],
                   check=True)
    installed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                               check=True).stdout.lower()
    assert "genesis-model" in installed and "genesis-kernels" in installed
    assert "genesis-data" not in installed and "genesis-train" not in installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    proc = subprocess.run([str(env_dir / "bin" / "genesis-generate"), "--checkpoint", str(checkpoint),
                           "--prompt", "In the beginning", "--max-new-tokens", "8", "--seed", "0"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("In the beginning") and len(proc.stdout) > len("In the beginning")
