"""Weight norms at each log line: the whole model's and each decoder block's.

The total weight norm is a progress measure of grokking: under weight decay it falls as a model trades a memorizing
solution for a generalizing one (Liu et al., "Omnigrok", 2023; Nanda et al., 2023). The gradient norm is the
trainer's own number (clipping computes it), logged beside it as `grad_norm`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from genesis_train.callbacks import Callback, Metrics
from genesis_train.distributed import local_part

if TYPE_CHECKING:
    from genesis_train.trainer import Trainer


def squared_norm(parameters) -> torch.Tensor:
    """The squared L2 norm of several tensors taken together (of this rank's shards of them under --fsdp), summed
    in float32 on their device."""
    return torch.stack([local_part(p).detach().float().pow(2).sum() for p in parameters]).sum()


class WeightNorms(Callback):
    name = "weight_norms"

    def on_step_end(self, trainer: Trainer, step: int, record: Metrics) -> Metrics | None:
        if not record:  # not a log line
            return None
        model = trainer.model
        squares = torch.stack([squared_norm(model.parameters()),
                               *(squared_norm(block.parameters()) for block in model.lm.blocks)])
        if trainer.sharded:
            trainer.dist.sum(squares)
        norms = squares.sqrt().tolist()  # one host sync for all of them
        return {"weight_norm": norms[0], **{f"weight_norm_block_{i:02d}": n for i, n in enumerate(norms[1:])}}
