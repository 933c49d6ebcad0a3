"""Training configuration: one dataclass, filled from defaults < TOML file < command line.

Every field carries its own help text; the command line is generated from these fields, so
`genesis-train --help` documents exactly what a TOML file can set.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genesis_data.corpus import default_cache_dir
from genesis_data.sampler import DEFAULT_WEIGHTS
from genesis_train.callbacks.grokking import GrokkingRule


class ConfigError(ValueError):
    """A user mistake in the configuration: reported as one line, without a traceback."""


class TrainingError(RuntimeError):
    """Training cannot go on (steps that stay non-finite, weights that became so): one line, exit 1."""


def _opt(default: Any, help: str, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help, **extra})


DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICES = ("auto", "cpu", "cuda")
TOKENIZERS = ("bpe", "char")
DATASETS = ("bible", "modular")
# --eval-batches 0: as many validation batches per task as an evaluation runs in this time at the device's measured
# peak (a large preset on a CPU must not sit in its first evaluation for minutes), within 1..EVAL_BATCHES_MAX.
EVAL_SECONDS_AT_PEAK = 30.0
EVAL_BATCHES_MAX = 8


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
    task_lm: float = _opt(DEFAULT_WEIGHTS["lm"], "sampling weight of the language-model task")
    task_coherence: float = _opt(DEFAULT_WEIGHTS["coherence"], "sampling weight of the verse-coherence task")
    task_xref: float = _opt(DEFAULT_WEIGHTS["xref"], "sampling weight of the cross-reference triplet task")
    task_paraphrase: float = _opt(DEFAULT_WEIGHTS["paraphrase"],
                                  "sampling weight of the cross-translation paraphrase task")
    # optimisation
    steps: int = _opt(1000, "optimizer steps to train for")
    batch_size: int = _opt(8, "sequences per micro-batch")
    block_size: int = _opt(0, "tokens per sequence; 0 takes the preset's max_seq_len")
    grad_accum: int = _opt(1, "micro-batches accumulated per optimizer step")
    lr: float = _opt(1e-3, "peak learning rate (AdamW)")
    min_lr: float = _opt(1e-4, "learning rate at the end of the cosine decay")
    warmup_steps: int = _opt(100, "linear warmup steps")
    optimizer: str = _opt("adamw", "adamw (decoupled weight decay) or adam (weight decay as an L2 term of the "
                          "gradient, as the Grokfast paper's runs)", choices=("adamw", "adam"))
    weight_decay: float = _opt(0.1, "weight decay on matrices (not on norms, biases or embeddings)")
    beta1: float = _opt(0.9, "Adam beta1")
    beta2: float = _opt(0.95, "Adam beta2")
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
    fsdp: bool = _opt(False, "under torchrun: shard parameters, gradients and optimizer state across the processes "
                      "(FSDP2), for presets whose AdamW state does not fit one device")
    seed: int = _opt(0, "seed for weights and the data stream")
    # bookkeeping
    out_dir: str = _opt("runs/{mode}", "run directory for checkpoints and metrics ({mode} is replaced)")
    log_interval: int = _opt(10, "steps between metric lines")
    eval_interval: int = _opt(100, "steps between validation passes (and at the last step)")
    eval_batches: int = _opt(0, f"validation batches per task and pass (held-out chapters); 0: as many as run in "
                             f"about {EVAL_SECONDS_AT_PEAK:.0f} s at the device's measured peak, from 1 to "
                             f"{EVAL_BATCHES_MAX}")
    checkpoint_interval: int = _opt(0, "steps between checkpoints (and at the last step); 0: min(500, steps / 4), "
                                    "so a run always has checkpoints before its end")
    keep_checkpoints: int = _opt(3, "how many recent checkpoints to keep")
    resume: bool = _opt(False, "continue from the latest complete checkpoint in out_dir (an error when there is "
                        "none)")
    overwrite: bool = _opt(False, "start a new run in an out_dir that holds another run, deleting that run's "
                           "checkpoints, metrics and TensorBoard files")
    max_skipped_steps: int = _opt(10, "steps in a row whose loss or gradient norm is not finite (each skipped, "
                                  "the weights untouched) before training stops with an error")
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
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    @property
    def checkpoint_every(self) -> int:
        """Steps between checkpoints: --checkpoint-interval, or by default at most a quarter of the run."""
        return self.checkpoint_interval or min(500, max(1, self.steps // 4))

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
        for f in dataclasses.fields(self):
            _check_number(f.name, getattr(self, f.name))
        if self.min_lr > self.lr:
            raise ConfigError(f"--min-lr must be <= --lr (the cosine decays from --lr to it), got "
                              f"min_lr={self.min_lr}, lr={self.lr}")
        if sum(self.task_weights.values()) <= 0:
            raise ConfigError("task weights (--task-lm, --task-coherence, --task-xref, --task-paraphrase) must be "
                              ">= 0 with a positive sum")
        if not self.out_dir.strip():
            raise ConfigError("--out-dir must not be empty (the default is runs/{mode})")
        if self.detect_grokking and self.grokking_window < self.eval_interval * 2:
            raise ConfigError(f"--grokking-window {self.grokking_window} must span at least two evaluations "
                              f"(2 x --eval-interval = {2 * self.eval_interval} steps)")
        if self.detect_grokking and self.grokking_span < self.eval_interval:
            raise ConfigError(f"--grokking-span {self.grokking_span} is shorter than --eval-interval "
                              f"{self.eval_interval}: a drop could never be seen within it")
        check_grokfast_options(self.grokfast_alpha, self.grokfast_lamb)
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
        for name, kind in (("bible_dir", "a directory"), ("text_file", "a file"), ("cross_references", "a file")):
            path = getattr(self, name)
            if path and not Path(path).exists():
                raise ConfigError(f"--{_flag(name)}: {path} does not exist")
            if path and not (Path(path).is_dir() if kind == "a directory" else Path(path).is_file()):
                raise ConfigError(f"--{_flag(name)}: {path} is not {kind}")


_POSITIVE = ("a positive integer", lambda v: v > 0)
_FRACTION = ("a fraction between 0 and 1 (exclusive)", lambda v: 0 < v < 1)
_BETA = ("a finite number in [0, 1)", lambda v: 0 <= v < 1)
_WEIGHT = ("a finite number >= 0 (a sampling weight; 0 turns the task off)", lambda v: v >= 0)
# The range of each number a run takes: (what the message says it must be, the test). A float not listed here need
# only be finite (grokfast_alpha and grokfast_lamb: check_grokfast_options owns their ranges).
_NUMBER_RANGES: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(["steps", "batch_size", "grad_accum", "vocab_size", "log_interval", "eval_interval",
                     "keep_checkpoints", "max_skipped_steps", "grokking_window",
                     "grokking_span", "alignment_verses", "concepts_every"], _POSITIVE),
    "modulus": ("an integer >= 2", lambda v: v >= 2),
    "block_size": ("an integer >= 0 (0 uses the preset's length)", lambda v: v >= 0),
    "warmup_steps": ("an integer >= 0", lambda v: v >= 0),
    "alignment_every": ("an integer >= 0 (0 turns it off)", lambda v: v >= 0),
    "checkpoint_interval": ("an integer >= 0 (0: min(500, steps / 4))", lambda v: v >= 0),
    "eval_batches": ("an integer >= 0 (0 sizes it to the device)", lambda v: v >= 0),
    # torch.manual_seed takes an unsigned 64-bit seed, numpy's generators no negative one.
    "seed": ("an integer in [0, 2**64)", lambda v: 0 <= v < 2**64),
    "train_fraction": _FRACTION,
    "lr": ("a finite number > 0", lambda v: v > 0),
    "min_lr": ("a finite number >= 0", lambda v: v >= 0),
    "weight_decay": ("a finite number >= 0", lambda v: v >= 0),
    "beta1": _BETA,
    "beta2": _BETA,
    "grad_clip": ("a finite number >= 0 (0 turns clipping off)", lambda v: v >= 0),
    **dict.fromkeys(["task_lm", "task_coherence", "task_xref", "task_paraphrase"], _WEIGHT),
    **dict.fromkeys(["grokking_threshold", "grokking_tolerance", "grokking_memorization"], _FRACTION),
}


def _check_number(name: str, value: Any, label: str | None = None) -> None:
    """Every int and float field: finite (argparse's float() and TOML both accept nan and inf) and in its range.
    The message names `label`, by default the command-line option."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    must_be, in_range = _NUMBER_RANGES.get(name, ("a finite number", lambda v: True))
    finite = isinstance(value, int) or math.isfinite(value)  # an int is finite (and may be too big for a float)
    if not (finite and in_range(value)):
        raise ConfigError(f"{label or '--' + _flag(name)} must be {must_be}, got {value}")


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
    except IsADirectoryError:
        raise ConfigError(f"--config: {path} is a directory; give a TOML file (e.g. configs/cpu.toml)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config: {path} is not a UTF-8 text file; give a TOML file (e.g. configs/cpu.toml)") \
            from None
    except OSError as e:  # e.g. no permission to read it
        raise ConfigError(f"--config: cannot read {path} ({e.strerror or e})") from None
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
                _check_number(name, values[name], label=f"{path}: {prefix}{key}")

    take(raw, "")
    return values


def build_config(toml_path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """defaults < TOML < command line, then validate."""
    values = load_toml(toml_path) if toml_path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def check_writable_dirs(cfg: TrainConfig) -> None:
    """The run directory and the cache are, or can be made, directories this process may write in; checked before
    anything is written, so a bad --out-dir fails at once and not at the first checkpoint. Creates nothing."""
    if cfg.cache_dir:
        cache_option = "--cache-dir"
    elif os.environ.get("GENESIS_CACHE_DIR"):
        cache_option = "$GENESIS_CACHE_DIR"
    else:
        cache_option = "the cache directory"
    _check_writable_dir("--out-dir", cfg.run_dir, "choose another --out-dir")
    _check_writable_dir(cache_option, cfg.cache_path, "choose another with --cache-dir")


def _check_writable_dir(option: str, path: Path, advice: str) -> None:
    existing = path  # the deepest part of the path that exists: the directories below it would be made in it
    while not (existing.exists() or existing.is_symlink()) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = f"{path} is" if existing == path else f"{path} cannot be made: {existing} is"
        raise ConfigError(f"{option}: {where} a file, not a directory; {advice}")
    try:
        # A file that is never linked into the directory (O_TMPFILE) or unlinked at once: nothing stays behind.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{option}: cannot write in {existing} ({e.strerror or e}); {advice}") from None
