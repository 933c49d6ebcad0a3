import dataclasses
import math
from pathlib import Path

import pytest

from genesis_train.config import ConfigError, TrainConfig, build_config, load_toml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_precedence_defaults_toml_cli(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('steps = 50\nlr = 0.002\n[data]\nvocab_size = 512\n')
    cfg = build_config(toml, {"steps": 7, "batch_size": None})
    assert cfg.steps == 7  # command line beats TOML
    assert cfg.lr == 0.002 and cfg.vocab_size == 512  # TOML beats defaults, tables only group
    assert cfg.batch_size == TrainConfig().batch_size  # an option not given leaves the default


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_hardware_configs_load(path):
    cfg = build_config(path, {})
    assert cfg.device in ("cpu", "cuda")


@pytest.mark.parametrize("text, message", [
    ("stepz = 3\n", "unknown option 'stepz'"),
    ("steps = 'many'\n", "steps must be int"),
    ("steps = [\n", "not valid TOML"),
])
def test_bad_toml_names_file_and_problem(tmp_path, text, message):
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_toml(toml)
    assert str(toml) in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    ({"steps": 0}, "--steps"),
    ({"dtype": "float8"}, "--dtype"),
    ({"lr": 1e-4, "min_lr": 1e-3}, "--min-lr"),
    ({"task_lm": 0.0, "task_coherence": 0.0, "task_xref": 0.0, "task_paraphrase": 0.0}, "task weights"),
    ({"bible_dir": "/nonexistent/bibles"}, "--bible-dir"),
])
def test_invalid_values_name_the_option(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_config(None, overrides)


def test_missing_toml_file():
    with pytest.raises(ConfigError, match="--config: .*does not exist"):
        build_config("/nonexistent.toml", {})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainConfig) if type(f.default) is float])
def test_every_float_option_must_be_finite(name, value):
    """argparse's float() and TOML both accept nan and inf: each float option refuses them, naming itself."""
    with pytest.raises(ConfigError, match=f"^--{name.replace('_', '-')} must be .*, got {value}$"):
        build_config(None, {name: value})


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainConfig) if type(f.default) is int])
def test_every_int_option_refuses_a_negative_value(name):
    with pytest.raises(ConfigError, match=f"^--{name.replace('_', '-')} must be "):
        build_config(None, {name: -1})
