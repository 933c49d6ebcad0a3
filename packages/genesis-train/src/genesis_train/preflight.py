"""Before training allocates anything: will the run fit in the device's memory, and how long will a step take?

The memory is genesis-model's estimate (`training_memory`: weights, gradients, AdamW states and the activations
autograd keeps, with or without gradient checkpointing) against what the device has free (CUDA: `mem_get_info`;
the CPU: the machine's available RAM). A run that will not fit stops with one line that gives both numbers and the
options that would fit, keeping the global batch (batch x grad-accum) the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genesis_model import ModelConfig, training_memory
from genesis_model.checkpoint import available_memory
from genesis_model.config import CUDA_CONTEXT_BYTES, bytes_human
from genesis_train.config import ConfigError, TrainConfig


@dataclass(frozen=True)
class Shape:
    """What decides a step's memory besides the model: micro-batch, accumulation, checkpointing."""

    batch_size: int
    grad_accum: int
    checkpointing: bool

    def options(self) -> str:
        return " ".join([*(["--gradient-checkpointing"] if self.checkpointing else []),
                         f"--batch-size {self.batch_size}", f"--grad-accum {self.grad_accum}"])


def training_bytes(model: ModelConfig, shape: Shape, seq_len: int, device: torch.device, dtype: torch.dtype,
                   shards: int = 1) -> int:
    """Estimated peak bytes of a training step (plus the CUDA context on a GPU) in each of `shards` processes that
    share the weights, gradients and AdamW moments out between them (--fsdp)."""
    memory = training_memory(model, shape.batch_size, seq_len, autocast=dtype != torch.float32)
    total = memory.total_checkpointed if shape.checkpointing else memory.total
    state = memory.weights + memory.grads + memory.adamw
    total -= state - state // shards
    return total + (CUDA_CONTEXT_BYTES if device.type == "cuda" else 0)


def smaller_shapes(shape: Shape) -> list[Shape]:
    """Shapes with the same global batch and less memory, least change first: checkpointing, then halved
    micro-batches (with doubled accumulation)."""
    shapes = []
    batch, accum = shape.batch_size, shape.grad_accum
    while True:
        for checkpointing in dict.fromkeys([shape.checkpointing, True]):
            candidate = Shape(batch, accum, checkpointing)
            if candidate != shape:
                shapes.append(candidate)
        if batch % 2:
            return shapes
        batch, accum = batch // 2, accum * 2


def check_fit(cfg: TrainConfig, model: ModelConfig, seq_len: int, device: torch.device, dtype: torch.dtype,
              sharing: int = 1, shards: int = 1) -> None:
    """Raises ConfigError when the run will not fit in the device's free memory, naming options that would.
    `sharing` processes train on the device (torchrun's ranks of one node on its CPU): each gets its share.
    `shards` processes share out the model's state (--fsdp)."""
    available = available_memory(device)
    if available is None:
        return
    available //= sharing
    shape = Shape(cfg.batch_size, cfg.grad_accum, cfg.gradient_checkpointing)
    needed = training_bytes(model, shape, seq_len, device, dtype, shards)
    if needed <= available:
        return
    what = (f"--mode {cfg.mode} at {shape.batch_size} x {seq_len} tokens a micro-batch"
            f"{' with gradient checkpointing' if shape.checkpointing else ''} in "
            f"{str(dtype).removeprefix('torch.')}")
    sized = [(s, training_bytes(model, s, seq_len, device, dtype, shards)) for s in smaller_shapes(shape)]
    fitting = [(s, n) for s, n in sized if n <= available]
    if fitting:
        first, first_bytes = fitting[0]
        advice = f"{first.options()} fits (about {bytes_human(first_bytes)}, the same global batch)"
    else:
        advice = ("not even one sequence a micro-batch with --gradient-checkpointing fits: choose a smaller --mode "
                  "or --block-size (`genesis-model presets` lists each preset's memory)")
    share = f" (its share for each of {sharing} processes on this machine)" if sharing > 1 else ""
    raise ConfigError(f"{what} needs about {bytes_human(needed)} to train, {bytes_human(available)} is free on "
                      f"{device}{share}; {advice}")


def step_seconds_at_peak(flops_per_token: float, tokens_per_step: int, peak_flops: float) -> float:
    """A lower bound on a step's time: its FLOPs at the device's measured peak."""
    return flops_per_token * tokens_per_step / peak_flops
