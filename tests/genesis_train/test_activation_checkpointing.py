"""Activation checkpointing, applied by genesis-train from outside the model: the same loss and gradients as the
plain model, the same parameter names (checkpoints do not depend on it), and fewer saved activations: per block only
its fp32 input, what genesis_model.config's checkpointed estimate counts."""

import pytest
import torch
import torch.nn.functional as F

from genesis_model import GenesisLM, ModelConfig
from genesis_train.activation_checkpointing import apply_activation_checkpointing


def loss_and_gradients(checkpointing: bool, norm_position: str):
    torch.manual_seed(1)
    model = GenesisLM(ModelConfig(d_model=32, n_layers=3, n_heads=4, vocab_size=97, max_seq_len=48,
                                  norm_position=norm_position)).double().train()
    if checkpointing:
        apply_activation_checkpointing(model.blocks)
    ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(2))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        loss = F.cross_entropy(model(ids).flatten(0, 1), ids.flatten())
    loss.backward()
    return model, loss.detach(), {name: p.grad for name, p in model.named_parameters()}, sum(saved)


def test_recomputed_blocks_give_the_same_loss_and_gradients_under_the_same_names(monkeypatch):
    monkeypatch.setenv("GENESIS_KERNELS_BACKEND", "torch")
    for norm_position in ("deepnorm", "prenorm"):
        plain, plain_loss, plain_grads, plain_saved = loss_and_gradients(False, norm_position)
        recomputed, loss, grads, saved = loss_and_gradients(True, norm_position)
        torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
        assert grads.keys() == plain_grads.keys() and recomputed.state_dict().keys() == plain.state_dict().keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, plain_grads[name], rtol=1e-12, atol=1e-12, msg=name)
        assert saved < plain_saved / 2


def checkpointed(cfg: ModelConfig) -> GenesisLM:
    model = GenesisLM(cfg).train()
    apply_activation_checkpointing(model.blocks)
    return model


@pytest.mark.parametrize("norm_position", ["deepnorm", "prenorm"])
def test_a_recomputed_block_keeps_only_its_fp32_input(norm_position, hidden_states_saved_bytes):
    """In a bf16-autocast forward, differencing 2 and 1 layers, as genesis-model's test of the plain estimate does."""
    batch, seq = 2, 32
    configs = [ModelConfig.from_preset("tiny", n_layers=n, norm_position=norm_position) for n in (1, 2)]
    per_layer = (hidden_states_saved_bytes(checkpointed(configs[1]), batch, seq)
                 - hidden_states_saved_bytes(checkpointed(configs[0]), batch, seq))
    assert per_layer == batch * seq * configs[0].d_model * 4
