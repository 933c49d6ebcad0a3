"""Activation (gradient) checkpointing: a runtime choice of how to train, applied to a model from outside, so that
a model's configuration and its checkpoints never depend on it (as torchtitan applies it).

Each decoder block keeps only its input in the forward pass and recomputes its activations in the backward pass:
the activations of a whole model shrink to one block's plus every block's input, for about one more forward pass
of compute. Applied before DDP, FSDP and torch.compile wrap the model; parameter names do not change.
"""

from __future__ import annotations

import torch
from torch.distributed._composable import checkpoint


def apply_activation_checkpointing(blocks: torch.nn.ModuleList) -> None:
    """Every block recomputes its activations in backward (in place; the blocks' parameters stay as they are)."""
    for block in blocks:
        checkpoint(block)
