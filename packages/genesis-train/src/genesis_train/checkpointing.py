"""Checkpoints of a run: atomic, keep-last-K, and enough state to resume the exact same run.

A checkpoint is a directory `<run>/checkpoints/step-00000200/` holding what genesis-model's
`save_pretrained` writes (config.json, model.safetensors, tokenizer.json: loadable with only
genesis-model installed), `train_state.pt` (optimizer, scheduler, RNG and data-stream state),
`train_config.json`, and last `manifest.json` (every file's size). Saving writes a hidden temporary
directory, fsyncs each file and the directory, then renames it into place; pruning renames a directory
aside before deleting it. So a kill at any moment leaves either a complete checkpoint under its name or
nothing there, and a directory without its manifest is never listed, counted or resumed from.
Leftovers of a kill (temporary and half-deleted directories, one checkpoint too many) go at the next start.

A sharded run (--fsdp) writes the same files (model.safetensors holds the whole model, gathered, so that
genesis-model alone loads it) except that the optimizer state stays in shards: every rank writes its own into
`optimizer/` with torch.distributed.checkpoint, and train_state.pt names that directory in place of the state.
The checkpoint directory must then be on a file system every rank sees.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from genesis_model import CheckpointError, load_pretrained, save_pretrained
from genesis_train.config import TrainConfig
from genesis_train.metrics import RunLog

_STEP_DIR = re.compile(r"^step-(\d+)$")
TRAIN_STATE = "train_state.pt"
MANIFEST = "manifest.json"
# What resuming reads from train_state.pt; a state without one of them is damaged.
TRAIN_STATE_KEYS = ("step", "optimizer", "scheduler", "scaler", "sampler", "rng")
SHARDED_OPTIMIZER = "optimizer"  # the subdirectory of a sharded run's optimizer state


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def is_complete(path: Path) -> bool:
    """A checkpoint directory whose manifest, written last, is there."""
    return (path / MANIFEST).is_file()


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete periodic checkpoints of a run, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP_DIR.match(p.name)) and p.is_dir() and is_complete(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def holds_a_run(run_dir: Path) -> bool:
    """Whether a directory already holds a run's checkpoints (complete or not) or metrics."""
    root = checkpoint_root(run_dir)
    metrics = run_dir / RunLog.METRICS
    return (root.is_dir() and any(root.iterdir())) or (metrics.is_file() and metrics.stat().st_size > 0)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _delete(path: Path) -> None:
    """Renames a directory aside (atomic), then deletes it: a kill mid-delete leaves only a hidden leftover."""
    aside = path.with_name(f".{path.name}.deleting")
    os.replace(path, aside)
    shutil.rmtree(aside)


def prune(run_dir: Path, keep: int) -> None:
    """Keeps the newest `keep` complete periodic checkpoints and removes the leftovers of a kill (temporary and
    half-deleted directories). Kept checkpoints (events) and directories without a manifest are left alone."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(".") and path.name.endswith((".tmp", ".deleting")):
            shutil.rmtree(path, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        _delete(old)


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


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def pending_shards(run_dir: Path, name: str) -> Path:
    """Where the ranks of a sharded run write a checkpoint's optimizer shards before rank 0 completes it (hidden,
    and removed by `prune` when a kill leaves it behind)."""
    return checkpoint_root(run_dir) / f".{name}.shards.tmp"


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, tokenizer_file: Path | None,
                    train_state: dict[str, Any], cfg: TrainConfig, name: str | None = None,
                    weights: dict[str, torch.Tensor] | None = None, shards: Path | None = None) -> Path:
    """Writes `checkpoints/step-<step>/`, or `checkpoints/<name>/` for a kept checkpoint (e.g. a grokking event's),
    which neither counts among the last K nor is ever pruned. A sharded run passes the whole model's `weights` and
    the directory its ranks wrote the optimizer shards to, which becomes the checkpoint's `optimizer/`."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = name or checkpoint_name(step)
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(model, tmp, tokenizer_file=tokenizer_file, state_dict=weights)
        if shards is not None:
            os.replace(shards, tmp / SHARDED_OPTIMIZER)
        try:
            torch.save(train_state, tmp / TRAIN_STATE)
        except RuntimeError as e:  # torch's writer reports a full disk as "file write failed", without the errno
            if shutil.disk_usage(root).free < _tensor_bytes(train_state):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / TRAIN_STATE)) from e
            raise
        (tmp / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")
        written = [p for p in sorted(tmp.rglob("*")) if p.is_file()]
        files = {p.relative_to(tmp).as_posix(): p.stat().st_size for p in written}
        (tmp / MANIFEST).write_text(json.dumps({"step": step, "files": files}, indent=1) + "\n")
        # On disk before the rename makes them visible, as torch.distributed.checkpoint does.
        for path in [*written, tmp / MANIFEST, *(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
            _fsync(path)
        if final.exists():
            _delete(final)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if shards is not None:
            shutil.rmtree(shards, ignore_errors=True)
        raise
    prune(run_dir, cfg.keep_checkpoints)
    return final


def save_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """Every rank of a sharded run writes its shards of the optimizer state into `directory` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=directory)


def load_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: Path) -> None:
    """The optimizer state a sharded run saved, read by every rank into its own shards (a collective). The saved
    run may have had another number of ranks: torch.distributed.checkpoint reshards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    # The template holds a state for every parameter (torch creates it with a step that changes nothing); a
    # parameter that never had a gradient (a head of a task not drawn yet) has none saved, and none after loading.
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    dcp.load(state, checkpoint_id=directory, planner=dcp.DefaultLoadPlanner(allow_partial_load=True))
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
    saved = dcp.FileSystemReader(directory).read_metadata().state_dict_metadata
    for name, param in model.named_parameters():
        if not any(key.startswith(f"optimizer.state.{name}.") for key in saved):
            optimizer.state.pop(param, None)


def gather_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU from a sharded model (a collective; the other ranks get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in a nested state (what writing it needs, roughly)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def check_checkpoint(path: Path) -> None:
    """Raises CheckpointError naming the first file that is missing or not the size the manifest recorded."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path / MANIFEST}: missing or unreadable ({e})") from None
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if file.stat().st_size != size:
            raise CheckpointError(f"{file}: {file.stat().st_size} bytes, {size} when it was saved (truncated or "
                                  f"changed)")


def intact_before(run_dir: Path, checkpoint: Path) -> Path | None:
    """The newest complete checkpoint older than `checkpoint` whose files all match its manifest."""
    for path in reversed(list_checkpoints(run_dir)):
        if path.name < checkpoint.name:
            try:
                check_checkpoint(path)
            except CheckpointError:
                continue
            return path
    return None


def load_checkpoint(path: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model (on the CPU) and the train state of a checkpoint directory; CheckpointError naming the file when
    any part is missing, truncated or not what a checkpoint holds."""
    check_checkpoint(path)
    model = load_pretrained(path)
    try:
        # weights_only: the state holds tensors, numbers and strings only, never arbitrary objects (a pickle with
        # code in it is refused here rather than run).
        with warnings.catch_warnings():  # torch warns about odd pickles before refusing them: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... for a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path / TRAIN_STATE}: not a readable train state ({reason[:200]})") from None
    missing = [key for key in TRAIN_STATE_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path / TRAIN_STATE}: lacks {', '.join(missing)}")
    return model, state
