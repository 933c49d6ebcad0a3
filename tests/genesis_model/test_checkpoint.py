import json
import pickle

import pytest
import torch

from genesis_model import CheckpointError, GenesisLM, MultiTaskModel, load_pretrained, save_pretrained
from genesis_model.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE


def assert_same_model(a, b):
    assert type(a) is type(b) and a.config == b.config
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


@pytest.mark.parametrize("model_class", [GenesisLM, MultiTaskModel])
@pytest.mark.parametrize("overrides", [{}, dict(norm_position="prenorm", tie_embeddings=False, n_kv_heads=2)])
def test_round_trip_restores_the_saved_class(tmp_path, make_config, tokenizer_file, model_class, overrides):
    model = model_class(make_config(**overrides))
    save_pretrained(model, tmp_path / "ckpt", tokenizer_file=tokenizer_file)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted([CONFIG_FILE, WEIGHTS_FILE,
                                                                              TOKENIZER_FILE])
    loaded = load_pretrained(tmp_path / "ckpt")
    assert_same_model(model, loaded)
    assert not loaded.training
    ids = torch.randint(0, 97, (2, 9))
    lm, loaded_lm = getattr(model, "lm", model), getattr(loaded, "lm", loaded)
    torch.testing.assert_close(loaded_lm(ids), lm(ids), rtol=0, atol=0)


def test_load_pretrained_of_a_multitask_checkpoint_holds_the_saved_lm(tmp_path, make_config):
    model = MultiTaskModel(make_config())
    save_pretrained(model, tmp_path)
    assert_same_model(load_pretrained(tmp_path).lm, model.lm)


def test_tied_embedding_is_stored_once(tmp_path, make_config):
    from safetensors import safe_open

    save_pretrained(GenesisLM(make_config()), tmp_path)
    with safe_open(tmp_path / WEIGHTS_FILE, "pt") as weights:
        assert "embed.weight" in weights.keys() and not any("lm_head" in key for key in weights.keys())


def test_load_in_bfloat16(tmp_path, make_config):
    model = GenesisLM(make_config())
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.equal(loaded.embed.weight, model.embed.weight.to(torch.bfloat16))


def test_loading_never_unpickles(tmp_path, make_config, monkeypatch):
    save_pretrained(MultiTaskModel(make_config()), tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint load unpickled something")

    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    assert isinstance(load_pretrained(tmp_path), MultiTaskModel)


@pytest.fixture
def checkpoint(tmp_path, make_config):
    directory = tmp_path / "ckpt"
    save_pretrained(GenesisLM(make_config()), directory)
    return directory


@pytest.mark.parametrize("damage, file, message", [
    (lambda d: (d / WEIGHTS_FILE).unlink(), WEIGHTS_FILE, "missing"),
    (lambda d: (d / CONFIG_FILE).unlink(), CONFIG_FILE, "missing"),
    (lambda d: (d / WEIGHTS_FILE).write_bytes((d / WEIGHTS_FILE).read_bytes()[:-100]), WEIGHTS_FILE,
     "truncated or corrupt"),
    (lambda d: (d / WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!"), WEIGHTS_FILE,
     "truncated or corrupt"),
    (lambda d: (d / CONFIG_FILE).write_text("{not json"), CONFIG_FILE, "not valid JSON"),
    (lambda d: (d / CONFIG_FILE).write_text(json.dumps(
        {**json.loads((d / CONFIG_FILE).read_text()), "model_class": "GPT2"})), CONFIG_FILE, "model_class 'GPT2'"),
    (lambda d: (d / CONFIG_FILE).write_text(json.dumps(
        {**json.loads((d / CONFIG_FILE).read_text()), "format_version": 99})), CONFIG_FILE, "format_version 99"),
], ids=["no-weights", "no-config", "truncated", "corrupt-header", "bad-json", "unknown-class", "future-version"])
def test_damaged_checkpoints_fail_with_a_message_naming_the_file(checkpoint, damage, file, message):
    damage(checkpoint)
    with pytest.raises(CheckpointError, match=message) as error:
        load_pretrained(checkpoint)
    assert str(checkpoint / file) in str(error.value) and "\n" not in str(error.value)


def test_checkpoint_of_another_shape_names_the_tensor(checkpoint):
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["d_mlp"] = 112
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"tensor blocks\.0\.mlp\.gate_up\.weight has shape \(192, 32\) but "
                                              r"config\.json describes \(224, 32\)") as error:
        load_pretrained(checkpoint)
    assert str(checkpoint / WEIGHTS_FILE) in str(error.value)


def test_checkpoint_with_other_layers_names_the_missing_tensor(checkpoint):
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["n_layers"] = 3
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensors do not match config.json \(missing "
                                              r"blocks\.2\."):
        load_pretrained(checkpoint)


def test_invalid_config_values_name_the_config_file(checkpoint):
    meta = json.loads((checkpoint / CONFIG_FILE).read_text())
    meta["config"]["n_heads"] = 5
    (checkpoint / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"config\.json: ModelConfig: d_model=32 is not divisible"):
        load_pretrained(checkpoint)


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_pretrained(tmp_path / "nowhere")


def test_non_finite_weights_are_refused_by_name(tmp_path, make_config):
    model = GenesisLM(make_config())
    with torch.no_grad():
        next(p for name, p in model.named_parameters() if name.startswith("blocks.0."))[0] = float("inf")
    save_pretrained(model, tmp_path)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS_FILE}: 1 tensors hold NaN or infinite values \(first: "
                                              rf"blocks\.0\..*\); the training diverged before this checkpoint"):
        load_pretrained(tmp_path)
