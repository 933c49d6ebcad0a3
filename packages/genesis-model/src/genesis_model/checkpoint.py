"""Checkpoint directories: config.json + model.safetensors (+ tokenizer.json). Loading never unpickles.

config.json records which class was saved (GenesisLM or MultiTaskModel) and its ModelConfig; load_pretrained
rebuilds that class on the meta device (no wasted initialization) and adopts the stored tensors. Every way a
directory can be wrong ends in a CheckpointError whose one-line message names the file at fault.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, bytes_human, inference_memory
from .heads import MultiTaskModel
from .model import GenesisLM, RotaryEmbedding

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
MODEL_CLASSES = {cls.__name__: cls for cls in (GenesisLM, MultiTaskModel)}


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be loaded; the message names the file."""


def save_pretrained(model: GenesisLM | MultiTaskModel, directory: str | os.PathLike,
                    tokenizer_file: str | os.PathLike | None = None,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write config.json, model.safetensors and (when given) a copy of the tokenizer file into `directory`. The
    weights are `model`'s own, or `state_dict` when given (the whole model's, e.g. gathered from the ranks of a
    sharded run)."""
    # The class itself or a subclass (wrappers such as FSDP's derive one from the model's class).
    name = next((n for n, cls in MODEL_CLASSES.items() if isinstance(model, cls)), None)
    if name is None:
        raise TypeError(f"save_pretrained: expected one of {', '.join(MODEL_CLASSES)}, got {type(model).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = model.state_dict() if state_dict is None else state_dict
    tensors = {key: value.detach().contiguous() for key, value in weights.items()}
    # Write then rename, so an interrupted save never leaves a truncated file under the real name.
    partial = directory / (WEIGHTS_FILE + ".partial")
    try:
        save_file(tensors, partial, metadata={"format": "pt"})
    except SafetensorError as e:
        partial.unlink(missing_ok=True)
        raise storage_error(e, partial) from e
    os.replace(partial, directory / WEIGHTS_FILE)
    meta = {"format_version": FORMAT_VERSION, "model_class": name, "config": model.config.to_dict()}
    (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if tokenizer_file is not None:
        tokenizer_file = Path(tokenizer_file)
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"{tokenizer_file}: tokenizer file not found")
        target = directory / TOKENIZER_FILE
        if not target.exists() or not target.samefile(tokenizer_file):
            shutil.copyfile(tokenizer_file, target)
    return directory


def storage_error(error: SafetensorError, path: Path) -> Exception:
    """safetensors reports a failed write as "... I/O error: <text> (os error N)": the OSError that names the errno
    and the file (a full disk, a read-only file system), so callers handle it as any other failed write."""
    found = re.search(r"\(os error (\d+)\)", str(error))
    if found is None:
        return error
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def read_config(directory: str | os.PathLike) -> tuple[type, ModelConfig]:
    """The saved class and ModelConfig of a checkpoint directory, from config.json alone."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: checkpoint directory not found")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' object; was it written by genesis_model.save_pretrained?")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {meta.get('format_version')!r}, this genesis-model reads "
                              f"{FORMAT_VERSION}")
    cls = MODEL_CLASSES.get(meta.get("model_class"))
    if cls is None:
        raise CheckpointError(f"{path}: model_class {meta.get('model_class')!r} is not one of "
                              f"{', '.join(MODEL_CLASSES)}")
    try:
        return cls, ModelConfig.from_dict(meta["config"], source=str(path))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: {error}" if str(path) not in str(error) else str(error)) from None


def available_memory(device: str | torch.device) -> int | None:
    """Free bytes on `device` (a CUDA GPU's, or the machine's for the CPU); None where unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return None  # loading onto it fails on its own, with its own message
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as meminfo:  # MemAvailable counts the page cache the kernel would give up
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config: ModelConfig, source: Path, device: str | torch.device, dtype: torch.dtype | None,
                 with_heads: bool) -> None:
    """Refuses, naming the fields, a config.json whose model would not fit in `device`'s free memory: checked before
    anything is allocated, so an absurd value (10^9 layers, a max_seq_len of 10^12) fails at once, not after a long
    hang or with a misleading out-of-memory error."""
    # As stored: the dtype is in the weights file, not read yet; 4 bytes (fp32) is what training writes.
    bytes_per_weight = torch.finfo(dtype).bits // 8 if dtype is not None and dtype.is_floating_point else 4
    parts = inference_memory(config, bytes_per_weight, with_heads)
    available = available_memory(device)
    total = sum(parts.values())
    if available is not None and total > available:
        largest = max(parts, key=parts.get)
        raise CheckpointError(f"{source}: this model needs {bytes_human(total)} of memory, more than the "
                              f"{bytes_human(available)} free on {device}; most of it is {largest}: "
                              f"{bytes_human(parts[largest])}")


def load_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> GenesisLM | MultiTaskModel:
    """The model class that was saved, in eval mode, on `device`, in `dtype` (default: as stored)."""
    cls, config = read_config(directory)
    check_memory(config, Path(directory) / CONFIG_FILE, device, dtype, with_heads=cls is MultiTaskModel)
    path = Path(directory) / WEIGHTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint directory holds {CONFIG_FILE} and {WEIGHTS_FILE}")
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: unreadable safetensors file, truncated or corrupt ({message})") from None

    with torch.device("meta"):
        model = cls(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        detail = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
        raise CheckpointError(f"{path}: tensors do not match {CONFIG_FILE} ({detail})")
    for key, meta_tensor in expected.items():
        if tensors[key].shape != meta_tensor.shape:
            raise CheckpointError(f"{path}: tensor {key} has shape {tuple(tensors[key].shape)} but {CONFIG_FILE} "
                                  f"describes {tuple(meta_tensor.shape)}")
    # Non-finite weights generate nothing useful: refuse them by name rather than print empty text.
    broken = [key for key, tensor in tensors.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if broken:
        raise CheckpointError(f"{path}: {len(broken)} tensors hold NaN or infinite values (first: {broken[0]}); the "
                              f"training diverged before this checkpoint: use an earlier one")
    model.load_state_dict(tensors, strict=True, assign=True)
    for module in model.modules():
        if isinstance(module, RotaryEmbedding):
            module.reset_parameters(device)
    stored_dtype = next(iter(tensors.values())).dtype
    return model.to(dtype=dtype or stored_dtype).eval()
