import torch

from genesis_model import ModelConfig, MultiTaskModel
from genesis_train.callbacks.norms import WeightNorms


def test_weight_norms_match_float64_and_come_only_with_log_lines():
    model = MultiTaskModel(ModelConfig(d_model=16, n_layers=3, n_heads=2, vocab_size=50, max_seq_len=16))
    trainer = type("T", (), {"model": model, "sharded": False})()
    assert WeightNorms().on_step_end(trainer, 1, {}) is None
    norms = WeightNorms().on_step_end(trainer, 2, {"loss_lm": 1.0})
    everything = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    assert abs(norms["weight_norm"] - everything.norm().item()) < 1e-4
    for i, block in enumerate(model.lm.blocks):
        expected = torch.cat([p.detach().double().flatten() for p in block.parameters()]).norm().item()
        assert abs(norms[f"weight_norm_block_{i:02d}"] - expected) < 1e-5
    assert len(norms) == 1 + 3
