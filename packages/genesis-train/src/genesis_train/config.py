"""Training configuration: one dataclass, filled from defaults < TOML file < command line.

Every field carries its own help text; the command line is generated from these fields, so
`genesis-train --help` documents exactly what a TOML file can set.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genesis_train.callbacks.grokking import GrokkingRule


class ConfigError(ValueError):
    """A user mistake in the configuration: reported as one line, without a traceback."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
TOKENIZERS = ("bpe", "char")
DATASETS = ("bible", "modular")


@dataclass
class TrainConfig:
    # model
    mode: str = _opt("tiny", "model preset (see `genesis-model presets`), e.g. tiny, small, deep_narrow_40")
    norm_position: str = _opt("deepnorm", "residual scheme: deepnorm (post-norm with DeepNet scaling) or prenorm",
                              choices=("deepnorm", "prenorm"))
    gradient_checkpointing: bool = _opt(False, "recompute block activations in the backward pass to save memory")
    # data
    dataset: str = _opt("bible", "what to train on: bible (translations, the four tasks) or modular (a op b mod p, "
                        "the grokking task of Power et al. 2022)", choices=DATASETS)
    modulus: int = _opt(97, "modular dataset: the modulus p")
    operation: str = _opt("+", "modular dataset: the operation, one of + - * /", choices=("+", "-", "*", "/"))
    train_fraction: float = _opt(0.3, "modular dataset: the fraction of all p x p equations used for training")
    bible_dir: str | None = _opt(None, "directory of translations (txt/csv/json/eBible); default: built-in corpus")
    text_file: str | None = _opt(None, "one translation as a plain-text file (language-model task only)")
    cross_references: str | None = _opt(None, "OpenBible.info cross_references.txt; enables the xref task")
    tokenizer: str = _opt("bpe", "tokenizer kind: bpe (byte-level, atomic 'Jehovah') or char", choices=TOKENIZERS)
    vocab_size: int = _opt(8192, "BPE vocabulary size (ignored by the char tokenizer)")
    cache_dir: str | None = _opt(None, "where tokenizers and token arrays are cached "
                                 "(default: $GENESIS_CACHE_DIR, else ~/.cache/genesis)")
    task_lm: float = _opt(0.70, "sampling weight of the language-model task")
    task_coherence: float = _opt(0.15, "sampling weight of the verse-coherence task")
    task_xref: float = _opt(0.075, "sampling weight of the cross-reference triplet task")
    task_paraphrase: float = _opt(0.075, "sampling weight of the cross-translation paraphrase task")
    # optimisation
    steps: int = _opt(1000, "optimizer steps to train for")
    batch_size: int = _opt(8, "sequences per micro-batch")
    block_size: int = _opt(0, "tokens per sequence; 0 takes the preset's max_seq_len")
    grad_accum: int = _opt(1, "micro-batches accumulated per optimizer step")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _opt(100, "linear warmup steps")
    weight_decay: float = _opt(0.1, "AdamW weight decay on matrices (not on norms, biases or embeddings)")
    beta1: float = _opt(0.9, "AdamW beta1")
    beta2: float = _opt(0.95, "AdamW beta2")
    grad_clip: float = _opt(1.0, "clip the global gradient norm to this value; 0 disables")
    grokfast: bool = _opt(False, "Grokfast-EMA (Lee et al. 2024): add lamb x an EMA of the gradients to them before "
                          "each step, amplifying their slow component; makes grokking come sooner")
    grokfast_alpha: float = _opt(0.98, "Grokfast: the EMA's decay, in [0, 1)")
    grokfast_lamb: float = _opt(2.0, "Grokfast: how much of the EMA is added to the gradient, >= 0")
    # hardware
    device: str = _opt("auto", "cpu, cuda, or auto (cuda when available)", choices=DEVICES)
    dtype: str = _opt("auto", "autocast dtype: float32, bfloat16, float16, or auto (bf16 on capable GPUs, else fp32)",
                      choices=DTYPES)
    compile: bool = _opt(False, "compile the model with torch.compile")
    seed: int = _opt(0, "seed for weights and the data stream")
    # bookkeeping
    out_dir: str = _opt("runs/{mode}", "run directory for checkpoints and metrics ({mode} is replaced)")
    log_interval: int = _opt(10, "steps between metric lines")
    eval_interval: int = _opt(100, "steps between validation passes (and at the last step)")
    eval_batches: int = _opt(8, "validation batches per pass (held-out chapters, LM task)")
    checkpoint_interval: int = _opt(500, "steps between checkpoints (and at the last step)")
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep")
    resume: bool = _opt(False, "continue from the latest checkpoint in out_dir")
    progress: bool = _opt(True, "show a progress line on the terminal")
    tensorboard: str = _opt("auto", "TensorBoard event files in the run directory: auto (when tensorboard is "
                            "installed), on, off; a bare --tensorboard means on", choices=("auto", "on", "off"),
                            const="on")
    # research measures (README: "Watching a run")
    detect_grokking: bool = _opt(False, "watch a validation series for grokking: a plateau while the model "
                                 "memorizes, then a sharp drop; events go to events.jsonl with a kept checkpoint")
    # the detector's defaults are GrokkingRule's (callbacks/grokking.py), its one owner
    grokking_metric: str = _opt(GrokkingRule.metric, "the validation series the detector watches (any val_* "
                                "metric, e.g. val_accuracy_lm; accuracies are read as errors)")
    grokking_window: int = _opt(GrokkingRule.window, "steps the series must stay on a plateau before a drop "
                                "counts")
    grokking_threshold: float = _opt(GrokkingRule.threshold, "relative improvement below the plateau's level "
                                     "that counts as a drop")
    grokking_span: int = _opt(GrokkingRule.span, "the drop must happen within this many steps after the "
                              "plateau's end")
    grokking_tolerance: float = _opt(GrokkingRule.tolerance, "a plateau: no point more than this (relative) "
                                     "below the window's starting level")
    grokking_memorization: float = _opt(GrokkingRule.memorization, "memorization before the drop: the train "
                                        "series at most this times the validation series (checked when the "
                                        "train series is logged)")
    alignment_every: int = _opt(0, "steps between cross-translation alignment measures (Procrustes distance of "
                                "held-out verses in two translations against a shuffled baseline); 0: off")
    alignment_pair: str = _opt("", "the two translations to align, as NAME,NAME (see genesis-data stats); "
                               "default: an English and a German one if present, else the first two")
    alignment_verses: int = _opt(512, "held-out verses the alignment embeds (in each translation)")
    concepts: str | None = _opt(None, "concept clustering: a TOML file of word groups; a bare --concepts uses "
                                "the built-in groups (names of God, love/mercy, sin/iniquity, ...)", const="builtin")
    concepts_every: int = _opt(500, "steps between concept clustering measures (with --concepts)")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir.replace("{mode}", self.mode))

    @property
    def cache_path(self) -> Path:
        return Path(self.cache_dir or os.environ.get("GENESIS_CACHE_DIR") or Path.home() / ".cache" / "genesis")

    @property
    def task_weights(self) -> dict[str, float]:
        return {"lm": self.task_lm, "coherence": self.task_coherence, "xref": self.task_xref,
                "paraphrase": self.task_paraphrase}

    @property
    def alignment_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.alignment_pair.split(",") if name.strip())

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(f"--{_flag(f.name)} must be one of {', '.join(choices)}, "
                                  f"got {getattr(self, f.name)!r}")
        positive = ["steps", "batch_size", "grad_accum", "vocab_size", "log_interval", "eval_interval",
                    "eval_batches", "checkpoint_interval", "keep_checkpoints", "grokking_window", "grokking_span",
                    "alignment_verses", "concepts_every"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"--{_flag(name)} must be a positive integer, got {getattr(self, name)}")
        if self.block_size < 0:
            raise ConfigError(f"--block-size must be >= 0 (0 uses the preset's length), got {self.block_size}")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"need 0 <= --min-lr <= --lr and --lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0:
            raise ConfigError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if any(w < 0 for w in self.task_weights.values()) or sum(self.task_weights.values()) <= 0:
            raise ConfigError("task weights (--task-lm, --task-coherence, --task-xref, --task-paraphrase) must be "
                              ">= 0 with a positive sum")
        for name in ("grokking_threshold", "grokking_tolerance", "grokking_memorization"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be a fraction between 0 and 1 (exclusive), "
                                  f"got {getattr(self, name)}")
        if self.detect_grokking and self.grokking_window < self.eval_interval * 2:
            raise ConfigError(f"--grokking-window {self.grokking_window} must span at least two evaluations "
                              f"(2 x --eval-interval = {2 * self.eval_interval} steps)")
        if self.detect_grokking and self.grokking_span < self.eval_interval:
            raise ConfigError(f"--grokking-span {self.grokking_span} is shorter than --eval-interval "
                              f"{self.eval_interval}: a drop could never be seen within it")
        check_grokfast_options(self.grokfast_alpha, self.grokfast_lamb)
        if self.alignment_every < 0:
            raise ConfigError(f"--alignment-every must be >= 0 (0 turns it off), got {self.alignment_every}")
        if self.alignment_pair and len(self.alignment_names) != 2:
            raise ConfigError(f"--alignment-pair must be two translation names as NAME,NAME, got "
                              f"{self.alignment_pair!r}")
        if self.concepts not in (None, "builtin") and not Path(self.concepts).is_file():
            raise ConfigError(f"--concepts: {self.concepts} does not exist (give a TOML file of word groups, or "
                              f"--concepts alone for the built-in groups)")
        if self.dataset == "modular":
            bible_options = [name for name in ("bible_dir", "text_file", "cross_references", "concepts")
                             if getattr(self, name)] + (["alignment_every"] if self.alignment_every else [])
            if bible_options:
                raise ConfigError(f"--{_flag(bible_options[0])} needs Bible text; it does not apply to "
                                  f"--dataset modular")
        if self.bible_dir and self.text_file:
            raise ConfigError("give either --bible-dir or --text-file, not both")
        for name in ("bible_dir", "text_file", "cross_references"):
            path = getattr(self, name)
            if path and not Path(path).exists():
                raise ConfigError(f"--{_flag(name)}: {path} does not exist")


def check_grokfast_options(alpha: float, lamb: float) -> None:
    """Raises ConfigError (a ValueError) naming the command-line option when alpha or lamb is out of range."""
    if not 0.0 <= alpha < 1.0:  # also rejects nan
        raise ConfigError(f"--grokfast-alpha must be in [0, 1) (the EMA's decay), got {alpha}")
    if not lamb >= 0.0:
        raise ConfigError(f"--grokfast-lamb must be >= 0 (the amplification of the slow gradient), got {lamb}")


def _flag(name: str) -> str:
    return name.replace("_", "-")


def fields_by_name() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}


def _coerce(f: dataclasses.Field, value: Any, where: str) -> Any:
    """Check a TOML value against the field's type; TOML already gives ints, floats, bools and strings."""
    kind = type(f.default) if f.default is not None else str
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {f.name} must be {kind.__name__}, got {value!r}")
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file of TrainConfig fields. Tables ([model], [data], ...) are allowed for grouping."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config: {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    known = fields_by_name()
    values: dict[str, Any] = {}

    def take(table: dict[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = key.replace("-", "_")
            if isinstance(value, dict):
                take(value, f"{prefix}{key}.")
            elif name not in known:
                raise ConfigError(f"{path}: unknown option '{prefix}{key}' (see genesis-train --help)")
            else:
                values[name] = _coerce(known[name], value, str(path))

    take(raw, "")
    return values


def build_config(toml_path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """defaults < TOML < command line, then validate."""
    values = load_toml(toml_path) if toml_path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
