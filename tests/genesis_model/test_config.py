import pytest
import torch

from genesis_model import PRESETS, GenesisLM, ModelConfig, MultiTaskModel
from genesis_model.config import activation_bytes_per_token_per_layer, swiglu_hidden_size, training_memory

# (layers, width, heads) exactly as the original design lists them, plus the CPU presets.
SEED_SHAPES = {
    "tiny": (6, 256, 4), "small": (8, 512, 8),
    "deep_narrow_32": (32, 640, 10), "deep_narrow_40": (40, 768, 12), "deep_narrow_48": (48, 896, 14),
    "deep_narrow_60": (60, 768, 12), "theos_small": (80, 1024, 16), "deep_narrow_100": (100, 1024, 16),
    "microscope": (12, 768, 12), "tower_of_truth": (144, 288, 12), "high_res_arbiter": (24, 1024, 16),
    "grokking": (2, 128, 4),  # the algorithmic task's transformer
}


def test_presets_have_the_design_shapes():
    assert {name: (c.n_layers, c.d_model, c.n_heads) for name, c in PRESETS.items()} == SEED_SHAPES
    assert (PRESETS["tiny"].d_mlp, PRESETS["small"].d_mlp) == (688, 1376)
    assert [PRESETS[n].max_seq_len for n in ("tiny", "small", "deep_narrow_40")] == [256, 512, 1024]
    assert all(c.vocab_size == 8192 and c.n_kv_heads == c.n_heads for c in PRESETS.values())


@pytest.mark.parametrize("width, expected", [(256, 688), (512, 1376), (768, 2048), (288, 768), (896, 2400),
                                             (640, 1712)])
def test_swiglu_hidden_size_is_eight_thirds_rounded_up_to_16(width, expected):
    assert swiglu_hidden_size(width) == expected


def test_from_preset_overrides_fields_and_leaves_the_preset_alone():
    cfg = ModelConfig.from_preset("tiny", vocab_size=300, norm_position="prenorm")
    assert (cfg.vocab_size, cfg.norm_position, cfg.d_model) == (300, "prenorm", 256)
    assert PRESETS["tiny"].vocab_size == 8192
    wider = ModelConfig.from_preset("tiny", d_model=512, n_heads=8)
    assert (wider.d_mlp, wider.n_kv_heads) == (1376, 8)  # derived fields follow the overridden shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_model=100, n_heads=3), "not divisible by n_heads=3"),
    (dict(n_heads=4, n_kv_heads=3), "not a multiple of n_kv_heads=3"),
    (dict(norm_position="postnorm"), "norm_position must be one of"),
    (dict(n_layers=0), "n_layers must be a positive integer"),
    (dict(d_model=36, n_heads=4), "head_dim=9 must be even"),
])
def test_invalid_configs_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_preset_and_unknown_field_are_named():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelConfig.from_preset("huge")
    with pytest.raises(ValueError, match="cfg.json: unknown model config field"):
        ModelConfig.from_dict({**PRESETS["tiny"].to_dict(), "n_experts": 8}, source="cfg.json")
    assert ModelConfig.from_dict(PRESETS["small"].to_dict()) == PRESETS["small"]


@pytest.mark.parametrize("overrides", [{}, dict(norm_position="prenorm"), dict(tie_embeddings=False),
                                       dict(n_kv_heads=2)])
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_parameter_count_matches_instantiated_model(preset, overrides):
    cfg = ModelConfig.from_preset(preset, **overrides)
    model = MultiTaskModel(cfg)
    assert sum(p.numel() for p in model.lm.parameters()) == cfg.num_parameters()
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters() + cfg.head_parameters()


@pytest.mark.parametrize("preset", [name for name in PRESETS if name not in ("tiny", "small")])
def test_parameter_count_of_large_presets_on_the_meta_device(preset):
    cfg = PRESETS[preset]
    with torch.device("meta"):
        model = MultiTaskModel(cfg)
    assert sum(p.numel() for p in model.lm.parameters()) == cfg.num_parameters()
    heads = sum(p.numel() for p in model.parameters()) - cfg.num_parameters()
    assert heads == cfg.head_parameters() < 0.10 * cfg.num_parameters()


def test_parameter_count_by_hand_for_tiny():
    # embedding 8192*256; per layer qkv 256*768 + out 256*256 + gate/up 256*1376 + down 688*256 + 2 norms.
    per_layer = 256 * 768 + 256 * 256 + 256 * 1376 + 688 * 256 + 2 * 256
    assert PRESETS["tiny"].num_parameters() == 8192 * 256 + 6 * per_layer == 6_843_392


@pytest.mark.parametrize("autocast", [True, False], ids=["bf16-autocast", "fp32"])
@pytest.mark.parametrize("norm_position", ["deepnorm", "prenorm"])
def test_activation_estimate_matches_saved_tensors(norm_position, autocast, hidden_states_saved_bytes):
    """The per-token, per-layer estimate equals what autograd really keeps (differencing 2 and 1 layers; with
    genesis-train's activation checkpointing: tests/genesis_train/test_activation_checkpointing.py)."""
    batch, seq = 2, 32
    configs = [ModelConfig.from_preset("tiny", n_layers=n, norm_position=norm_position) for n in (1, 2)]
    per_layer = (hidden_states_saved_bytes(GenesisLM(configs[1]).train(), batch, seq, autocast)
                 - hidden_states_saved_bytes(GenesisLM(configs[0]).train(), batch, seq, autocast))
    # Autocast keeps a bf16 copy of each matrix (the norms are not cast); fp32 training saves the weights themselves.
    weight_copies = 2 * configs[0].layer_parameters() - 2 * 2 * configs[0].d_model if autocast else 0
    measured = (per_layer - weight_copies) / (batch * seq)
    assert measured == pytest.approx(activation_bytes_per_token_per_layer(configs[0], autocast), rel=0.01)


def test_training_memory_parts():
    cfg = PRESETS["deep_narrow_40"]
    memory = training_memory(cfg, batch_size=8, seq_len=1024)
    params = cfg.num_parameters() + cfg.head_parameters()
    assert (memory.weights, memory.grads, memory.adamw) == (4 * params, 4 * params, 8 * params)
    assert memory.activations_checkpointed < memory.activations / 5
    assert memory.total == memory.weights + memory.grads + memory.adamw + memory.activations
