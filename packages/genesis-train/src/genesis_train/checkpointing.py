"""Checkpoints of a run: atomic, keep-last-K, and enough state to resume the exact same run.

A checkpoint is a directory `<run>/checkpoints/step-00000200/` holding what genesis-model's
`save_pretrained` writes (config.json, model.safetensors, tokenizer.json: loadable with only
genesis-model installed) plus `train_state.pt` (optimizer, scheduler, RNG and data-stream state)
and `train_config.json`. It is written under a temporary name and renamed into place, so a crash
never leaves a half-written checkpoint that resume would pick up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from genesis_model import load_pretrained, save_pretrained
from genesis_train.config import TrainConfig

_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAIN_STATE = "train_state.pt"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, tokenizer_file: Path | None,
                    train_state: dict[str, Any], cfg: TrainConfig, name: str | None = None) -> Path:
    """Writes `checkpoints/step-<step>/`, or `checkpoints/<name>/` for a kept checkpoint (e.g. a grokking event's),
    which neither counts among the last K nor is ever pruned."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = name or f"step-{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(model, tmp, tokenizer_file=tokenizer_file)
        torch.save(train_state, tmp / TRAIN_STATE)
        (tmp / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[: -cfg.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (on the CPU) and the train state of a checkpoint directory."""
    model = load_pretrained(path)
    # weights_only: the state holds tensors, numbers and strings only, never arbitrary objects.
    state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    return model, state
