"""Grokfast-EMA: amplify the slow component of the gradients (Lee et al. 2024, arXiv 2405.20233, Algorithm 2).

For every parameter with a gradient g, once per optimizer step:

    h <- alpha * h + (1 - alpha) * g      (h starts as the first gradient seen for that parameter)
    g <- g + lamb * h

The EMA h is a low-pass filter of the gradient sequence; adding it back amplifies the slow-varying direction that
the paper links to generalization, which makes grokking come sooner. Defaults alpha = 0.98, lamb = 2.0 are theirs.

Where in a training step `GrokfastEMA.apply()` goes (`Trainer.train_step`), exactly once per optimizer step:

1. after the backward of every micro-batch, so with `--grad-accum N` the filter sees the accumulated gradient of
   the whole step (one EMA update per optimizer step, as in the paper, not one per micro-batch);
2. after `scaler.unscale_(optimizer)`, so under fp16 AMP it filters the true gradients: the EMA carried across
   steps must not depend on the loss scale, which changes from step to step;
3. before `clip_grad_norm_`, so clipping bounds the gradient the optimizer actually uses (the filtered one) and
   the logged `grad_norm` is that gradient's norm; the reference applies the filter straight after backward,
   before any clipping, too;
4. before `scaler.step(optimizer)`.

Non-finite gradients: when the scaler finds inf/nan after `unscale_`, `scaler.step` skips the step. `apply()`
sees the same gradients and then returns without touching anything (neither the EMA nor the gradients), so one
overflowed step never poisons the EMA for the steps after it. The check is one fused reduction plus one host sync.

The EMA is kept in float32 on each parameter's device whatever the gradients' dtype; filtered gradients are
written back in their own dtype. `state_dict()` holds only tensors, numbers, strings, lists and dicts, so it can go
into the train state that checkpointing loads with `weights_only=True`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from genesis_train.config import check_grokfast_options


def all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite: one fused max-abs per tensor, then one host sync.
    The infinity norm cannot overflow where a 2-norm of large finite values could, and it propagates nan."""
    norms = torch._foreach_norm(tensors, ord=math.inf)
    return bool(torch.stack(norms).isfinite().all())


class GrokfastEMA:
    """The Grokfast-EMA gradient filter over a model's named parameters (see the module docstring for where in a
    step `apply()` belongs). Pass the plain module's `named_parameters()`, not a `torch.compile` wrapper's, whose
    names carry an `_orig_mod.` prefix and would not match a checkpoint of the plain model."""

    def __init__(self, parameters: Iterable[tuple[str, torch.nn.Parameter]], alpha: float = 0.98,
                 lamb: float = 2.0):
        check_grokfast_options(alpha, lamb)
        self.alpha, self.lamb = float(alpha), float(lamb)
        self.parameters = [(name, p) for name, p in parameters if p.requires_grad]
        # name -> float32 EMA; a parameter gets its entry the first time it has a gradient (a task head that no
        # batch has reached yet has none).
        self.ema: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self) -> None:
        """Filters every parameter's `.grad` in place; parameters without a gradient keep their EMA as it is."""
        named = [(name, p.grad) for name, p in self.parameters if p.grad is not None]
        if not named:
            return
        grads = [g for _, g in named]
        if not all_finite(grads):
            return
        fresh = [(name, g) for name, g in named if name not in self.ema]
        tracked = [(self.ema[name], g) for name, g in named if name in self.ema]
        if tracked:
            emas, tracked_grads = [h for h, _ in tracked], [g for _, g in tracked]
            # One multi-tensor kernel per op for all parameters; a float32 EMA takes low-precision gradients as
            # they are (the ops promote to float32).
            torch._foreach_mul_(emas, self.alpha)
            torch._foreach_add_(emas, tracked_grads, alpha=1.0 - self.alpha)
        # The first gradient seen starts the EMA exactly (the update would give alpha*g + (1-alpha)*g, which is g
        # only up to rounding).
        self.ema.update((name, g.detach().to(torch.float32, copy=True)) for name, g in fresh)
        if self.lamb:  # lamb = 0 must leave the gradients bit for bit (adding 0 * h would turn -0.0 into 0.0)
            # Computed in float32 against the EMA, rounded once into the gradient's own dtype.
            torch._foreach_add_(grads, [self.ema[name] for name, _ in named], alpha=self.lamb)

    def state_dict(self) -> dict[str, Any]:
        """alpha, lamb, the tracked parameter names and the EMA by name. The tensors are the live EMA (as an
        optimizer's state_dict), so save them before the next `apply()`."""
        return {"alpha": self.alpha, "lamb": self.lamb, "parameters": [name for name, _ in self.parameters],
                "ema": dict(self.ema)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores alpha, lamb and the EMA (copied to float32 on each parameter's device, so a state loaded on the
        CPU goes back to the GPU). Raises ValueError when the saved parameter names differ from this model's."""
        check_grokfast_options(state["alpha"], state["lamb"])
        ours = {name: p for name, p in self.parameters}
        saved = state["parameters"]
        saved_names = set(saved)
        missing = [name for name in ours if name not in saved_names]
        if missing:
            raise ValueError(f"Grokfast state has no parameter {missing[0]!r} of this model "
                             f"({len(missing)} missing); it was saved for another model")
        unexpected = [name for name in [*saved, *state["ema"]] if name not in ours]
        if unexpected:
            raise ValueError(f"Grokfast state holds parameter {unexpected[0]!r}, which this model does not have; "
                             f"it was saved for another model")
        ema = {}
        for name, h in state["ema"].items():
            param = ours[name]
            if h.shape != param.shape:
                raise ValueError(f"Grokfast state of parameter {name!r} has shape {tuple(h.shape)}, the model's is "
                                 f"{tuple(param.shape)}")
            ema[name] = h.to(param.device, torch.float32, copy=True)
        self.alpha, self.lamb, self.ema = float(state["alpha"]), float(state["lamb"]), ema
