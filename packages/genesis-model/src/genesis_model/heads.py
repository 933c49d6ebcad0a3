"""MultiTaskModel: the language model plus three small heads over one pooled sequence representation.

Pooled representation: the mean of the final hidden states (`GenesisLM.hidden_states`, already normalized) over
the real tokens of each row. Rows are right-padded and attention is causal, so real tokens never attend to
padding and no attention mask is needed; the mask only selects which positions enter the mean.

Tasks (batch["task"]; genesis-data's sampler defines them and the keys of their batches) and their losses:
- "lm": next-token cross-entropy through the tied LM head; labels -100 are ignored. Its accuracy is the share of
  labelled tokens whose argmax is the label.
- "coherence": one logit per sequence (do these verses follow each other?), binary cross-entropy.
- "xref": cross-reference embeddings, triplet loss with cosine distance (anchor closer to positive than to
  negative by TRIPLET_MARGIN).
- "paraphrase": language-invariant embeddings, symmetric in-batch InfoNCE over the (a, b) pairs at
  CONTRASTIVE_TEMPERATURE: each a must pick its own b out of the batch and vice versa.
Every task returns {"loss": scalar, ...} with detached metrics as 0-d tensors (no host sync in the step).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .model import GenesisLM

TRIPLET_MARGIN = 0.2
CONTRASTIVE_TEMPERATURE = 0.05


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, d) hidden states, (B, T) bool mask of real tokens -> (B, d) mean over the real tokens."""
    weights = mask.unsqueeze(-1).float()  # fp32 sums: a bf16 sum over hundreds of tokens drops digits
    return (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)


class MultiTaskModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.lm = GenesisLM(config)
        d = config.d_model
        self.coherence_head = nn.Linear(d, 1)
        self.xref_head = nn.Linear(d, d, bias=False)
        self.paraphrase_head = nn.Linear(d, d, bias=False)

    def pooled(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Each row's final hidden states averaged over its mask: the representation the heads and the measures
        read. The task losses use `_pool` instead, so that this public entry point may be hooked on its own (a
        sharded model gathers its weights around it as around forward)."""
        return self._pool(input_ids, mask)

    def _pool(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_mean(self.lm.hidden_states(input_ids), mask)

    def _pooled_together(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> list[torch.Tensor]:
        """Pool several (ids, mask) groups in one forward pass: right-pad them to a common length and stack."""
        length = max(ids.shape[1] for ids, _ in pairs)
        ids = torch.cat([F.pad(ids, (0, length - ids.shape[1])) for ids, _ in pairs])
        mask = torch.cat([F.pad(mask, (0, length - mask.shape[1])) for _, mask in pairs])
        return list(self._pool(ids, mask).split([ids.shape[0] for ids, _ in pairs]))

    def forward(self, batch: dict) -> dict:
        task = batch.get("task")
        if task == "lm":
            return self.lm_loss(batch["input_ids"], batch["labels"])
        if task == "coherence":
            return self.coherence_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
        if task == "xref":
            return self.xref_loss((batch["anchor_ids"], batch["anchor_mask"]),
                                  (batch["positive_ids"], batch["positive_mask"]),
                                  (batch["negative_ids"], batch["negative_mask"]))
        if task == "paraphrase":
            return self.paraphrase_loss((batch["a_ids"], batch["a_mask"]), (batch["b_ids"], batch["b_mask"]))
        raise ValueError(f"MultiTaskModel: unknown batch task {task!r}; it has losses for lm, coherence, xref and "
                         f"paraphrase (the tasks of genesis-data's batches)")

    def lm_loss(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict:
        logits = self.lm(input_ids)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        labelled = labels != -100
        correct = (logits.detach().argmax(-1) == labels) & labelled
        tokens = labelled.sum()
        return {"loss": loss, "tokens": tokens, "accuracy": correct.sum() / tokens.clamp(min=1)}

    def coherence_loss(self, input_ids, attention_mask, labels) -> dict:
        logit = self.coherence_head(self._pool(input_ids, attention_mask)).squeeze(-1).float()
        target = labels.to(logit.dtype)
        loss = F.binary_cross_entropy_with_logits(logit, target)
        return {"loss": loss, "accuracy": ((logit > 0) == (target > 0.5)).float().mean().detach()}

    def xref_loss(self, anchor, positive, negative) -> dict:
        pooled = self._pooled_together(anchor, positive, negative)
        a, p, n = (F.normalize(self.xref_head(x).float(), dim=-1) for x in pooled)
        positive_distance = 1 - (a * p).sum(-1)
        negative_distance = 1 - (a * n).sum(-1)
        loss = F.relu(positive_distance - negative_distance + TRIPLET_MARGIN).mean()
        return {"loss": loss, "accuracy": (positive_distance < negative_distance).float().mean().detach()}

    def paraphrase_loss(self, a, b) -> dict:
        pooled = self._pooled_together(a, b)
        a_emb, b_emb = (F.normalize(self.paraphrase_head(x).float(), dim=-1) for x in pooled)
        similarity = a_emb @ b_emb.T / CONTRASTIVE_TEMPERATURE
        target = torch.arange(similarity.shape[0], device=similarity.device)
        loss = (F.cross_entropy(similarity, target) + F.cross_entropy(similarity.T, target)) / 2
        return {"loss": loss, "accuracy": (similarity.argmax(-1) == target).float().mean().detach()}
