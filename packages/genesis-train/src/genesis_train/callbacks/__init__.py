"""Measures that watch a run, one per module, behind one small protocol.

The trainer calls every callback's hooks in order; a hook may return a dict of numbers, which the trainer merges
into the step's record (one line of metrics.jsonl, one TensorBoard scalar each). Callbacks read the model through
`trainer.model` (use `inference(trainer)`: eval mode, no gradients, the run's autocast) and never change it. Under
--fsdp (`trainer.sharded`) every rank runs the callbacks, the model's forward and `pooled` gather its weights, and a
parameter is a DTensor holding this rank's shard (`genesis_train.distributed.local_part`).

Hooks (all optional):
- `on_train_start(trainer)`: once, before the first step (after a resume, too).
- `on_step_end(trainer, step, record)`: after every optimizer step; `record` holds the step's train metrics when
  the step is a log step (`"loss_lm"`, ... present), else it is empty.
- `on_evaluate(trainer, step, record)`: after each validation pass; `record` holds the `val_*` metrics too.
- `on_checkpoint(trainer, step, path)`: after a checkpoint is written.
- `state_dict()` / `load_state_dict(state)`: what the callback must carry across `--resume` (saved with the
  checkpoint's train state; tensors, numbers, strings, lists and dicts only).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:
    from genesis_train.trainer import Trainer

Metrics = dict[str, Any]


class Callback:
    """Base class: every hook does nothing. `name` keys the callback's state in the checkpoint."""

    name: str = "callback"

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, step: int, record: Metrics) -> Metrics | None:
        return None

    def on_evaluate(self, trainer: Trainer, step: int, record: Metrics) -> Metrics | None:
        return None

    def on_checkpoint(self, trainer: Trainer, step: int, path: Path) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@contextlib.contextmanager
def inference(trainer: Trainer) -> Iterator[torch.nn.Module]:
    """The model in eval mode, without gradients, under the run's autocast; train mode is restored after."""
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), trainer.autocast():
            yield model
    finally:
        model.train(was_training)
        if trainer.sharded:  # FSDP keeps the root's gathered weights after a forward, for a backward that never comes
            model.reshard()
