"""The training loop: data -> model -> loss -> backward -> AdamW + schedule -> metrics, evaluation, checkpoints.

Each batch holds one task (drawn by the sampler's weights); with gradient accumulation a step mixes tasks. Measures
(weight norms, grokking detection, alignment, concept clustering) are callbacks (`genesis_train.callbacks`); their
numbers join the step's record.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, NoReturn

import torch

from genesis_data.algorithmic import ModularArithmetic
from genesis_data.corpus import Corpus
from genesis_data.progress import running, show_progress, track
from genesis_data.sampler import MultiTaskSampler, batch_tokens
from genesis_data.tokenizer import load_or_train_tokenizer
from genesis_model import PRESETS, CheckpointError, GenesisTokenizer, ModelConfig, MultiTaskModel
from genesis_model.config import train_flops_per_token
from genesis_train.activation_checkpointing import apply_activation_checkpointing
from genesis_train.callbacks import Callback, inference
from genesis_train.callbacks.alignment import CrossTranslationAlignment
from genesis_train.callbacks.concepts import ConceptClustering
from genesis_train.callbacks.grokking import GrokkingCallback, GrokkingRule
from genesis_train.callbacks.norms import WeightNorms
from genesis_train.checkpointing import (
    SHARDED_OPTIMIZER,
    checkpoint_name,
    checkpoint_root,
    gather_weights,
    holds_a_run,
    intact_before,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_sharded_optimizer,
    pending_shards,
    prune,
    rng_state,
    save_checkpoint,
    save_sharded_optimizer,
    set_rng_state,
)
from genesis_train.config import EVAL_BATCHES_MAX, EVAL_SECONDS_AT_PEAK, ConfigError, TrainConfig, TrainingError
from genesis_train.distributed import Distributed, local_part, whole
from genesis_train.grokfast import GrokfastEMA
from genesis_train.interrupt import Interrupted, StopSignals
from genesis_train.metrics import Progress, RunLog, tensorboard_available
from genesis_train.mfu import peak_flops
from genesis_train.optim import build_optimizer, build_scheduler
from genesis_train.preflight import check_fit, step_seconds_at_peak

PIECE_SECONDS_AT_PEAK = 2.0  # LM validation batches run in pieces this short, so the evaluation's progress moves

Batch = dict[str, Any]


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: this machine has no CUDA device (the GPU configs, e.g. "
                          "configs/t2000_low_vram.toml, set it); use configs/cpu.toml or --device cpu --dtype float32")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def resolve_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if cfg.dtype == "float16" and device.type == "cpu":
        # fp16 autocast and its loss scaling exist for GPUs; CPUs have no fast float16 matmuls.
        raise ConfigError("--dtype float16 on the CPU: float16 training is for GPUs and crawls on a CPU; use --dtype "
                          "float32 (or configs/cpu.toml)")
    return getattr(torch, cfg.dtype)


def load_corpus(cfg: TrainConfig) -> Corpus:
    if cfg.bible_dir:
        return Corpus.from_bible_dir(Path(cfg.bible_dir), cache_dir=cfg.cache_path)
    if cfg.text_file:
        return Corpus.from_text_file(Path(cfg.text_file))
    return Corpus.builtin(cache_dir=cfg.cache_path)


def split_rows(batch: Batch, rows: int) -> list[Batch]:
    """A batch as consecutive pieces of at most `rows` rows (itself when it has no more)."""
    size = len(batch["input_ids"])
    if size <= rows:
        return [batch]
    return [{k: v[i:i + rows] if torch.is_tensor(v) else v for k, v in batch.items()} for i in range(0, size, rows)]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        if cfg.mode not in PRESETS:
            raise ConfigError(f"--mode {cfg.mode!r} is not a preset; choose one of {', '.join(PRESETS)}")
        self.dist = Distributed.from_environment()
        self.cfg, self.log = cfg, log if self.dist.main else (lambda *_: None)
        self.sharded = cfg.fsdp
        if self.sharded:
            self._check_fsdp(cfg)
        # Ranks that evaluate, run the measures and take part in checkpoints: rank 0, or all of them when the model
        # is sharded (then each forward and each checkpoint needs every rank).
        self.measuring = self.dist.main or self.sharded
        show_progress(cfg.progress and self.dist.main)  # the long phases of preparing data and evaluating, too
        if not self.dist.main:  # genesis-data's notices (a task switched off, ...) are the same on every rank
            logging.getLogger("genesis_data").setLevel(logging.ERROR)
        self.run_dir = cfg.run_dir
        self.device = resolve_device(cfg)
        self.dtype = resolve_dtype(cfg, self.device)
        self.device = self.dist.start(self.device)
        torch.manual_seed(cfg.seed)
        # Rank 0 first: it tidies the run directory and fills the token caches that the other ranks then read.
        resume_from = self.dist.main_first(lambda: self._claim_run_dir(cfg))  # a refused run costs no loading
        self.dist.main_first(self._setup_data)
        check_fit(cfg, self.model_config, self.sampler.block_size, self.device, self.dtype,
                  sharing=self.dist.local_world_size if self.device.type == "cpu" else 1,
                  shards=self.dist.world_size if self.sharded else 1)
        self.peak, self.peak_source = peak_flops(self.device, self.dtype)
        self.flops_per_token = train_flops_per_token(self.model_config, self.sampler.block_size)

        self.step, self.skipped_in_a_row = 0, 0
        self.saved_step: int | None = None  # the step of the newest step-N checkpoint of this run
        # The numbers of the steps since the last log line, {name: [sum, count]} over every rank: part of the train
        # state, so that a resumed run logs the same means as an uninterrupted one when --log-interval does not
        # divide --checkpoint-interval.
        self.log_window: dict[str, list[float]] = {}
        state = self._load_model(resume_from) if resume_from is not None else None
        if state is None:
            self.model = MultiTaskModel(self.model_config)
        self.model.to(self.device)
        if cfg.gradient_checkpointing:
            apply_activation_checkpointing(self.model.lm.blocks)
        if self.sharded:
            self.dist.shard(self.model, self.dtype)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.grokfast = GrokfastEMA(self.model.named_parameters(), cfg.grokfast_alpha, cfg.grokfast_lamb) \
            if cfg.grokfast else None
        self.val_batches, self.val_units, self.eval_batches = {}, {}, None
        if self.measuring:
            self._setup_validation(state.get("eval_batches") if state is not None else None)
        # Evaluation and the measures call the model (compiled under --compile); training calls it under DDP when
        # there are several ranks (a sharded model reduces its gradients itself).
        self.eval_model = torch.compile(self.model) if cfg.compile else self.model
        self.train_model = self.eval_model
        if self.dist.enabled and not self.sharded:
            ddp = self.dist.wrap(self.model, self.device)
            self.train_model = torch.compile(ddp) if cfg.compile else ddp
        self._compiled: set[str] = set()
        self.callbacks = self._build_callbacks(cfg) if self.measuring else []
        if state is not None:
            self._resume(resume_from, state)
        if cfg.tensorboard == "on" and not tensorboard_available():
            raise ConfigError("--tensorboard on: the tensorboard package is not installed "
                              "(pip install 'genesis-train[tensorboard]', or --tensorboard off)")
        self.run_log = None  # rank 0 writes the metrics
        if self.dist.main:
            self._clear_run_dir()
            self.run_log = RunLog(self.run_dir, tensorboard=cfg.tensorboard != "off" and tensorboard_available(),
                                  resume_step=self.step if resume_from else None)

    def _load_model(self, checkpoint: Path) -> dict[str, Any]:
        """Sets the model a checkpoint holds and returns its train state, after checking that this run may continue
        it (the same model, a compatible number of processes, the same --fsdp)."""
        try:
            self.model, state = load_checkpoint(checkpoint)
        except CheckpointError as e:
            intact = intact_before(self.run_dir, checkpoint)
            offer = f"; {intact.name} is intact: move {checkpoint} aside to resume from it" if intact else ""
            raise ConfigError(f"--resume: {e}{offer}") from e
        if self.model.config != self.model_config:
            raise ConfigError(f"--resume: {checkpoint} holds a model of another shape or configuration than "
                              f"--mode {self.cfg.mode}; use another --out-dir or the same options")
        self._check_resumed_world(checkpoint, state)
        if (state["optimizer"] == SHARDED_OPTIMIZER) != self.sharded:
            trained = "without" if self.sharded else "with"
            raise ConfigError(f"--resume: {checkpoint} was trained {trained} --fsdp; resume it {trained} --fsdp")
        return state

    def _check_fsdp(self, cfg: TrainConfig) -> None:
        if not self.dist.enabled:
            raise ConfigError("--fsdp shards the model across processes: run under torchrun --nproc_per_node N "
                              "(N >= 2), or leave --fsdp out")
        if cfg.grokfast:
            raise ConfigError("--grokfast with --fsdp: the filter's state is not sharded; run Grokfast without --fsdp "
                              "(its models are small)")
        if cfg.dtype == "float16":
            raise ConfigError("--dtype float16 with --fsdp: sharded training takes bfloat16 or float32 (no loss "
                              "scaling over shards); use --dtype bfloat16")

    def _claim_run_dir(self, cfg: TrainConfig) -> Path | None:
        """The checkpoint to resume from, or None for a new run; refuses to mix a new run with another run's files
        and removes what a killed run left behind (temporary directories, one checkpoint too many)."""
        if cfg.resume:
            prune(self.run_dir, cfg.keep_checkpoints)
            resume_from = latest_checkpoint(self.run_dir)
            if resume_from is None:
                raise ConfigError(f"--resume: {self.run_dir} holds no complete checkpoint to resume from; run "
                                  f"without --resume to start a new run there")
            return resume_from
        if holds_a_run(self.run_dir) and not cfg.overwrite:
            latest = latest_checkpoint(self.run_dir)
            held = f"checkpoints up to {latest.name}" if latest else "another run's files"
            raise ConfigError(f"--out-dir {self.run_dir} holds another run ({held}): continue it with --resume, "
                              f"choose another --out-dir, or pass --overwrite to delete it")
        return None

    def _clear_run_dir(self) -> None:
        """--overwrite: the other run's files go once this run's setup has succeeded, just before it writes."""
        if self.cfg.resume or not self.cfg.overwrite or not holds_a_run(self.run_dir):
            return
        shutil.rmtree(checkpoint_root(self.run_dir), ignore_errors=True)
        RunLog.remove(self.run_dir)
        (self.run_dir / "plot.png").unlink(missing_ok=True)
        self.log(f"--overwrite: deleted the earlier run in {self.run_dir}")

    def _setup_data(self) -> None:
        try:
            if self.cfg.dataset == "modular":
                self._setup_modular(self.cfg)
            else:
                self._setup_bible(self.cfg)
        except (ValueError, FileNotFoundError) as e:
            # genesis-data reports bad files and impossible settings this way, naming the file:line or option
            raise ConfigError(str(e)) from e

    def _setup_validation(self, saved_count: int | None) -> None:
        """The validation batches of every task, sized for this device: `--eval-batches 0` takes as many (up to
        EVAL_BATCHES_MAX) as an evaluation at the device's measured peak runs in EVAL_SECONDS_AT_PEAK, at least one;
        a resumed run keeps the count it started with. LM batches run in pieces of rows short enough that the
        evaluation's progress moves every few seconds even for a large preset on a CPU; the pieces' losses weigh
        by their tokens, so the means are those of the whole batches."""
        cfg = self.cfg
        tasks = self.sampler.validation_tasks
        row_seconds = step_seconds_at_peak(self.flops_per_token / 3, self.sampler.block_size, self.peak)
        count = cfg.eval_batches or saved_count
        if count is None:
            batch_seconds = row_seconds * cfg.batch_size * len(tasks)  # an LM-length upper bound for every task
            count = max(1, min(EVAL_BATCHES_MAX, int(EVAL_SECONDS_AT_PEAK / batch_seconds)))
            if count < EVAL_BATCHES_MAX:
                self.log(f"evaluating {count} batch{'es' * (count > 1)} per task (--eval-batches 0: what runs in "
                         f"about {EVAL_SECONDS_AT_PEAK:.0f} s at this {self.device.type}'s measured peak; set "
                         f"--eval-batches to choose)")
        self.eval_batches = count
        rows = max(1, int(PIECE_SECONDS_AT_PEAK / row_seconds))
        self.val_batches, self.val_units = {}, {}
        for task in tasks:
            batches = self.sampler.validation_batches(count, task=task)
            if task == "lm":  # the other tasks contrast the rows of a batch with each other: never split
                pieces = [piece for batch in batches for piece in split_rows(batch, rows)]
                batches, self.val_units[task] = pieces, "batches" if len(pieces) == len(batches) else "parts"
            self.val_batches[task] = [to_device(b, self.device) for b in batches]

    def _model_config(self, cfg: TrainConfig, vocab: int, block_size: int) -> ModelConfig:
        preset = PRESETS[cfg.mode]
        return ModelConfig.from_preset(
            cfg.mode,
            vocab_size=64 * math.ceil(vocab / 64),  # a multiple of 64 keeps the output matmul on fast paths
            max_seq_len=max(block_size, preset.max_seq_len),
            norm_position=cfg.norm_position,
        )

    def _setup_modular(self, cfg: TrainConfig) -> None:
        self.corpus = None
        self.sampler = ModularArithmetic(cfg.modulus, cfg.operation, cfg.train_fraction, cfg.batch_size,
                                         seed=cfg.seed)
        self.tokenizer_file = self.sampler.tokenizer_path(cfg.cache_path)
        self.model_config = self._model_config(cfg, self.sampler.vocab_size, self.sampler.block_size)
        self.log(self.sampler.describe())

    def _setup_bible(self, cfg: TrainConfig) -> None:
        self.corpus = corpus = load_corpus(cfg)
        self.tokenizer_file = load_or_train_tokenizer(corpus, kind=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                                      cache_dir=cfg.cache_path)
        vocab = GenesisTokenizer.from_file(self.tokenizer_file).vocab_size
        block_size = cfg.block_size or PRESETS[cfg.mode].max_seq_len
        self.model_config = self._model_config(cfg, vocab, block_size)
        self.sampler = MultiTaskSampler(corpus, self.tokenizer_file, block_size=block_size, batch_size=cfg.batch_size,
                                        weights=cfg.task_weights, seed=cfg.seed,
                                        cross_references=Path(cfg.cross_references) if cfg.cross_references else None,
                                        cache_dir=cfg.cache_path)

    def validation_metrics(self) -> list[str]:
        """The names an evaluation reports."""
        names = [f"val_{kind}_{task}" for task in self.val_batches for kind in ("loss", "accuracy")]
        return names + (["val_ppl_lm"] if "lm" in self.val_batches else [])

    def _build_callbacks(self, cfg: TrainConfig) -> list[Callback]:
        """The measures the configuration switches on; each checks its options here, before any training."""
        callbacks: list[Callback] = [WeightNorms()]
        if cfg.detect_grokking:
            if cfg.grokking_metric not in self.validation_metrics():
                raise ConfigError(f"--grokking-metric {cfg.grokking_metric!r} is not a validation metric of this run; "
                                  f"choose one of {', '.join(self.validation_metrics())}")
            callbacks.append(GrokkingCallback(GrokkingRule(
                metric=cfg.grokking_metric, window=cfg.grokking_window, threshold=cfg.grokking_threshold,
                span=cfg.grokking_span, tolerance=cfg.grokking_tolerance, memorization=cfg.grokking_memorization)))
        if cfg.alignment_every:
            pair = self._alignment_pair(cfg)
            try:
                verses = self.sampler.parallel_verses(*pair, cfg.alignment_verses)
            except ValueError as e:
                raise ConfigError(f"--alignment-pair: {e}") from e
            self.log(f"alignment: {pair[0]} against {pair[1]}, {len(verses[0])} held-out verses, every "
                     f"{cfg.alignment_every} steps")
            callbacks.append(CrossTranslationAlignment(pair, verses, every=cfg.alignment_every,
                                                       batch_size=4 * cfg.batch_size, seed=cfg.seed))
        if cfg.concepts:
            callbacks.append(ConceptClustering(None if cfg.concepts == "builtin" else Path(cfg.concepts), self.corpus,
                                               self.tokenizer_file, every=cfg.concepts_every, seed=cfg.seed))
        return callbacks

    def _alignment_pair(self, cfg: TrainConfig) -> tuple[str, str]:
        languages = self.sampler.translation_languages
        if cfg.alignment_names:
            missing = [name for name in cfg.alignment_names if name not in languages]
            if missing:
                raise ConfigError(f"--alignment-pair: {', '.join(missing)} is not a translation of the corpus; "
                                  f"choose from {', '.join(languages)}")
            return cfg.alignment_names
        if len(languages) < 2:
            raise ConfigError("--alignment-every needs two translations; the corpus has one (use --bible-dir or the "
                              "built-in corpus, or --alignment-every 0)")
        english = [name for name, language in languages.items() if language == "en"]
        german = [name for name, language in languages.items() if language == "de"]
        if english and german:
            return english[0], german[0]
        names = list(languages)
        return names[0], names[1]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _compiling(self, kind: str) -> bool:
        """Whether the next forward of this kind ("evaluation", "training") compiles the model: the first of each
        under --compile (torch.compile traces a graph per kind, lazily, and reports nothing while it does)."""
        if not self.cfg.compile or kind in self._compiled:
            return False
        self._compiled.add(kind)
        return True

    def evaluate(self) -> dict[str, float]:
        """Held-out loss and accuracy of every task (the mean over its validation batches), and LM perplexity."""
        t0 = time.perf_counter()
        record: dict[str, float] = {}
        with inference(self):
            if self._compiling("evaluation"):  # compile on one batch first, with a progress of its own
                with running("--compile: compiling the model for evaluation"):
                    self.eval_model(next(iter(self.val_batches.values()))[0])
            for task, batches in self.val_batches.items():
                shown = track(batches, f"evaluating {task} at step {self.step}",
                              unit=self.val_units.get(task, "batches"))
                outputs = [self.eval_model(b) for b in shown]
                # LM batches weigh by their labelled tokens (a last, shorter batch counts for what it holds), the
                # other tasks' batches alike.
                weights = torch.stack([o.get("tokens", o["loss"].new_ones(())) for o in outputs]).float()
                for kind in ("loss", "accuracy"):
                    values = torch.stack([o[kind] for o in outputs]).float()
                    record[f"val_{kind}_{task}"] = ((values * weights).sum() / weights.sum()).item()
        if "val_loss_lm" in record:
            record["val_ppl_lm"] = math.exp(record["val_loss_lm"])
        record["eval_seconds"] = time.perf_counter() - t0
        return record

    def train_step(self) -> tuple[dict[str, list[float]], int]:
        """One optimizer step. Returns its numbers by name (`loss_<task>`, `accuracy_<task>`, `grad_norm`, and
        `skipped_steps` when it was skipped) as [sum, count] over the micro-batches of every rank, and the tokens
        every rank read."""
        outputs: dict[str, list[torch.Tensor]] = defaultdict(list)
        tokens = 0
        for micro_batch in range(self.cfg.grad_accum):
            batch = self.dist.keep(lambda: next(self.sampler))
            tokens += batch_tokens(batch)
            # Gradients are averaged across ranks in the backward of the step's last micro-batch only.
            with self._gradient_sync(micro_batch == self.cfg.grad_accum - 1):
                with self.autocast():
                    out = self.train_model(to_device(batch, self.device))
                self.scaler.scale(out["loss"] / self.cfg.grad_accum).backward()
            for kind in ("loss", "accuracy"):
                outputs[f"{kind}_{batch['task']}"].append(out[kind].detach())
        self.scaler.unscale_(self.optimizer)
        # Clipping computes the global gradient norm; with clipping off, an infinite bound only measures it.
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        if self.grokfast is None:
            grad_norm = whole(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        else:  # on the whole step's true (unscaled) gradient, before clipping bounds it; never a non-finite one
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
        # Under FSDP a parameter no micro-batch reached (another task's head) has a zero gradient where one process
        # has none and AdamW leaves it alone: those go back to None, so that the sharded step is the same step. The
        # gradients' sizes (L1: zero only when all zero, defined for a rank's empty shard) join the step's collective.
        with_grads = [p for p in self.model.parameters() if p.grad is not None] if self.sharded else []
        sizes = torch.stack(torch._foreach_norm([local_part(p.grad) for p in with_grads], 1)) if with_grads else None
        numbers, tokens, reached = self._step_numbers(outputs, tokens, grad_norm, sizes)
        for p, size in zip(with_grads, reached):
            if size == 0:
                p.grad = None
        bad_losses = [(name.removeprefix("loss_"), total) for name, (total, _) in numbers.items()
                      if name.startswith("loss_") and not math.isfinite(total)]
        finite = not bad_losses and math.isfinite(numbers["grad_norm"][0])
        if self.grokfast is not None:
            if finite:
                self.grokfast.apply()
            numbers["grad_norm"] = [float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)), 1]
        if finite or self.scaler.is_enabled():  # fp16: the scaler skips a non-finite step itself, lowering its scale
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._count_skipped(finite, bad_losses, numbers)
        return numbers, tokens

    def _gradient_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Whether this micro-batch's backward reduces gradients across ranks (the last of a step) or only
        accumulates them here."""
        if self.sharded:
            self.model.set_requires_gradient_sync(last)
        elif self.dist.enabled and not last:
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def _step_numbers(self, outputs: dict[str, list[torch.Tensor]], tokens: int, grad_norm: torch.Tensor,
                      extra: torch.Tensor | None = None) -> tuple[dict[str, list[float]], int, list[float]]:
        """The step's [sum, count] by name over every rank, its tokens, its gradient norm (the same on every rank
        once the gradients are reduced) and the sums of `extra` over the ranks: one collective and one host sync a
        step, the price of never letting a non-finite step reach the weights."""
        names = [f"{kind}_{task}" for task in self.sampler.tasks for kind in ("loss", "accuracy")]
        zero = grad_norm.new_zeros((), dtype=torch.float32)
        sums = [torch.stack(outputs[n]).float().sum() if n in outputs else zero for n in names]
        counts = torch.tensor([len(outputs.get(n, ())) for n in names] + [tokens], dtype=torch.float32)
        extra = zero.new_zeros(0) if extra is None else extra.float()
        totals = self.dist.sum(torch.cat([torch.stack([*sums, grad_norm.float()]), counts.to(zero.device), extra]))
        values = totals.tolist()
        n = len(names)
        numbers = {name: [values[i], int(values[n + 1 + i])] for i, name in enumerate(names) if values[n + 1 + i]}
        numbers["grad_norm"] = [values[n] / self.dist.world_size, 1]
        return numbers, int(values[2 * n + 1]), values[2 * n + 2:]

    def _state_bytes(self) -> int:
        """Bytes of the parameters and optimizer state this rank holds (its shards under --fsdp)."""
        tensors = [*self.model.parameters(),
                   *(v for state in self.optimizer.state.values() for v in state.values() if torch.is_tensor(v))]
        return sum(local_part(t).numel() * local_part(t).element_size() for t in tensors)

    def _count_skipped(self, finite: bool, bad_losses: list[tuple[str, float]],
                       numbers: dict[str, list[float]]) -> None:
        """Counts skipped steps in a row and stops training after --max-skipped-steps of them. Under fp16 an
        infinite gradient with finite losses is the scaler's ordinary business, not a skipped step."""
        if finite or (self.scaler.is_enabled() and not bad_losses):
            self.skipped_in_a_row = 0
            return
        self.skipped_in_a_row += 1
        numbers["skipped_steps"] = [1.0, 1]
        if self.skipped_in_a_row >= self.cfg.max_skipped_steps:
            culprit = (f"the {bad_losses[0][0]} loss is {bad_losses[0][1]}" if bad_losses
                       else f"the gradient norm is {numbers['grad_norm'][0]}")
            raise TrainingError(f"step {self.step + 1}: {culprit}, {self.skipped_in_a_row} steps in a row skipped "
                                f"(--max-skipped-steps {self.cfg.max_skipped_steps}); lower --lr or check the data")

    def _check_resumed_world(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """A run resumes exactly under another number of processes only when processes x --grad-accum (the
        micro-batches a step, which fix the data stream and the batch) stays the same."""
        world = state.get("world_size", 1)
        saved = world * state.get("grad_accum", self.cfg.grad_accum)
        now = self.dist.world_size * self.cfg.grad_accum
        if world != self.dist.world_size and saved != now:
            raise ConfigError(f"--resume: {checkpoint} was trained by {world} process(es) with {saved} micro-batches "
                              f"a step, this run has {self.dist.world_size} with {now}; resume with processes x "
                              f"--grad-accum = {saved} (torchrun --nproc_per_node {world} and the same --grad-accum)")

    def save(self, name: str | None = None) -> Path:
        """A checkpoint of the whole train state: `step-<step>` (kept among the last K), or `name` (kept always).
        Under --fsdp every rank takes part: each writes its optimizer shards, rank 0 the rest."""
        # Never a checkpoint of non-finite weights (one host sync for the whole check).
        finite = bool(torch.stack([torch.isfinite(local_part(p)).all() for p in self.model.parameters()]).all())
        if self.dist.any(not finite) if self.sharded else not finite:
            bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(local_part(p)).all()]
            what = f"{len(bad)} weight tensors hold non-finite values (first: {bad[0]})" if bad else \
                "weight tensors hold non-finite values (in another rank's shards)"
            raise TrainingError(f"step {self.step}: {what}; no checkpoint written, the last one is intact; lower --lr")
        state = {
            "step": self.step,
            "eval_batches": self.eval_batches,
            "world_size": self.dist.world_size,
            "grad_accum": self.cfg.grad_accum,
            "skipped_in_a_row": self.skipped_in_a_row,
            "log_window": dict(self.log_window),
            "optimizer": SHARDED_OPTIMIZER if self.sharded else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
            "callbacks": {callback.name: callback.state_dict() for callback in self.callbacks},
        }
        if self.grokfast is not None:
            state["grokfast"] = self.grokfast.state_dict()
        periodic, name = name is None, name or checkpoint_name(self.step)
        if self.sharded:
            shards = pending_shards(self.run_dir, name)
            self.dist.main_only(lambda: shutil.rmtree(shards, ignore_errors=True))  # a kill's leftover
            save_sharded_optimizer(self.model, self.optimizer, shards)
            weights = gather_weights(self.model)
            self.dist.main_only(lambda: save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer_file,
                                                        state, self.cfg, name=name, weights=weights, shards=shards))
        else:
            save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer_file, state, self.cfg, name=name)
        if periodic:
            self.saved_step = self.step
        return checkpoint_root(self.run_dir) / name

    def _resume(self, checkpoint: Path, state: dict[str, Any]) -> None:
        """Puts back every part of the train state that `save` wrote (the model is already loaded)."""
        if self.sharded:
            load_sharded_optimizer(self.model, self.optimizer, checkpoint / SHARDED_OPTIMIZER)
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        if self.grokfast is not None and "grokfast" in state:  # switched on only now: the EMA starts fresh
            self.grokfast.load_state_dict(state["grokfast"])
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if callback.name in saved:  # a measure switched on only now starts fresh
                callback.load_state_dict(saved[callback.name])
        self.step = self.saved_step = state["step"]
        self.skipped_in_a_row = state.get("skipped_in_a_row", 0)
        for name, window in state.get("log_window", {}).items():
            # [sum, count]; runs saved before this format hold the values themselves, as a tensor
            self.log_window[name] = [float(window.sum()), window.numel()] if torch.is_tensor(window) \
                else [float(window[0]), window[1]]
        set_rng_state(state["rng"])  # last: nothing set up after it draws from the generators
        self.log(f"resumed from {checkpoint} at step {self.step}")

    def _stop_on_signal(self, stop: StopSignals) -> NoReturn:
        """After a stop was requested: a checkpoint of the step just finished (unless it has one), then Interrupted.
        Stopped before the first step, the run leaves nothing behind, so the same command starts it again."""
        # Under torchrun a signal may reach some ranks only; all of them stop at the same step.
        what, signum = (stop.requested, stop.signum) if stop.signum is not None else ("a signal to another rank",
                                                                                        signal.SIGTERM)
        if self.step == 0:
            if self.dist.main:
                self.run_log.close()
                RunLog.remove(self.run_dir)
            raise Interrupted(f"interrupted by {what} before the first step; nothing written", signum)
        if self.saved_step == self.step or not self.measuring:
            path, how = latest_checkpoint(self.run_dir), "holds it"
        else:
            path, how = self.save(), "written"
        raise Interrupted(f"interrupted by {what} after step {self.step}: checkpoint {path} {how} "
                          f"(continue with --resume)", signum)

    def announce(self, text: str) -> None:
        """A line on stderr from rank 0 (the others would repeat it)."""
        if self.dist.main:
            print(text, file=sys.stderr, flush=True)

    def record_event(self, event: dict[str, Any]) -> None:
        """An event (e.g. grokking) as a line of metrics.jsonl and events.jsonl, and as TensorBoard text."""
        if self.run_log is not None:
            self.run_log.write(event)

    def _run_callbacks(self, hook: str, record: dict[str, Any]) -> None:
        for callback in self.callbacks:
            numbers = getattr(callback, hook)(self, self.step, record)
            if numbers:
                record.update(numbers)

    def _due(self, interval: int) -> bool:
        """Periodic work happens every `interval` steps and at the last step."""
        return self.step % interval == 0 or self.step == self.cfg.steps

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"{cfg.mode}: {n_params / 1e6:.2f}M parameters, {self.device} {str(self.dtype).removeprefix('torch.')}, "
                 f"tasks {', '.join(self.sampler.tasks)}, run dir {self.run_dir}")
        self.model.train()
        peak, peak_source, flops_per_token = self.peak, self.peak_source, self.flops_per_token
        self.log(f"MFU against the {peak_source} peak of {peak / 1e12:.3g} TFLOP/s "
                 f"({flops_per_token / 1e6:.1f} MFLOP a token)")
        world = self.dist.world_size
        self.log(f"global batch: {cfg.batch_size} sequences x {cfg.grad_accum} micro-batches x {world} "
                 f"process{'es' * (world > 1)} = {cfg.batch_size * cfg.grad_accum * world:,} sequences of up to "
                 f"{self.sampler.block_size} tokens a step")
        tokens_per_step = cfg.batch_size * cfg.grad_accum * self.sampler.block_size
        seconds = step_seconds_at_peak(flops_per_token, tokens_per_step, peak)
        if seconds > 10:  # a large preset on a small device: say so before the silence of the first step
            # An evaluation is forward passes only: a third of a training step's FLOPs a token.
            eval_tokens = sum(batch_tokens(b) for task_batches in self.val_batches.values() for b in task_batches)
            evaluation = step_seconds_at_peak(flops_per_token / 3, eval_tokens, peak)
            self.log(f"a step ({tokens_per_step:,} tokens) takes at least {seconds:,.0f} s on this {self.device.type} "
                     f"at its measured peak, an evaluation ({eval_tokens:,} tokens) at least {evaluation:,.0f} s; "
                     f"a smaller --mode, --batch-size or --block-size is faster, fewer --eval-batches shorten "
                     f"evaluations")
        for callback in self.callbacks:
            callback.on_train_start(self)
        last_val: dict[str, Any] = {}
        progress = Progress(cfg.steps, start=self.step, enabled=cfg.progress and self.dist.main)
        window = self.log_window
        try:
            with StopSignals(announce=self.announce) as stop:
                if self.step == 0 and self.measuring:
                    last_val = {"step": 0, **self.evaluate()}
                    self._run_callbacks("on_evaluate", last_val)
                    self._run_callbacks("on_step_end", last_val)  # the measures' values at initialization
                    if self.run_log is not None:
                        self.run_log.write(last_val)
                window_tokens, window_t0 = 0, time.perf_counter()
                state_unlogged = True
                stopping = self.dist.any(stop.requested is not None)
                while self.step < cfg.steps and not stopping:
                    if self._compiling("training"):
                        with running("--compile: compiling the model for training (the first step)"):
                            numbers, tokens = self.train_step()
                    else:
                        numbers, tokens = self.train_step()
                    self.step += 1
                    for name, (total, count) in numbers.items():
                        kept = window.setdefault(name, [0.0, 0])
                        kept[0] += total
                        kept[1] += count
                    window_tokens += tokens
                    record: dict[str, Any] = {}
                    if self._due(cfg.log_interval):
                        elapsed = time.perf_counter() - window_t0
                        skipped = window.pop("skipped_steps", [0.0, 0])[1]
                        record = {name: total / count for name, (total, count) in window.items()}
                        if skipped:
                            record["skipped_steps"] = skipped
                        tokens_per_s = window_tokens / elapsed
                        record.update(lr=self.scheduler.get_last_lr()[0], tokens_per_s=tokens_per_s,
                                      mfu=tokens_per_s * flops_per_token / (peak * self.dist.world_size))
                        if state_unlogged:  # the model's state in memory is settled after the first step
                            record["state_mb"] = self._state_bytes() / 2**20
                            state_unlogged = False
                        window.clear()
                        window_tokens, window_t0 = 0, time.perf_counter()
                    if self._due(cfg.eval_interval) and self.measuring:
                        record.update(self.evaluate())
                        self._run_callbacks("on_evaluate", record)
                        last_val = {"step": self.step, **record}
                    self._run_callbacks("on_step_end", record)
                    if record and self.dist.main:
                        self.run_log.write({"step": self.step, **record})
                        progress.update(self.step, progress_text(record))
                    if self._due(cfg.checkpoint_every) and self.measuring:
                        self.save()
                    stopping = self.dist.any(stop.requested is not None)
                if stopping:
                    self._stop_on_signal(stop)
        finally:
            progress.close()
            if self.run_log is not None:
                self.run_log.close()
        if not last_val and self.measuring:  # resumed at the last step: nothing was evaluated in this process
            last_val = {"step": self.step, **self.evaluate()}
        if not self.dist.main:
            return {"step": self.step, "val_loss": None, "validation": {}, "checkpoint": None}
        final = latest_checkpoint(self.run_dir)
        val_loss = last_val.get("val_loss_lm")
        shown = f"val loss {val_loss:.3f}" if val_loss is not None else "no LM validation"
        self.log(f"done: {shown} at step {self.step}; checkpoint {final}; metrics {self.run_log.path}")
        return {"step": self.step, "val_loss": val_loss, "validation": last_val, "checkpoint": final}


def progress_text(record: dict[str, Any]) -> str:
    """The progress line's numbers: train losses by task, validation losses, throughput."""
    shown = [f"{k.removeprefix('loss_')} {v:.3f}" for k, v in record.items() if k.startswith("loss_")]
    shown += [f"{k.removeprefix('val_loss_')} val {v:.3f}" for k, v in record.items() if k.startswith("val_loss_")]
    text = " ".join(shown)
    if "tokens_per_s" in record:
        text += f" | {record['tokens_per_s']:,.0f} tok/s, MFU {100 * record['mfu']:.1f}%"
    return text


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    trainer = Trainer(cfg, log=log)
    result = trainer.fit()
    trainer.dist.close()  # after a failure, the command line leaves without tearing down (genesis_train.cli)
    return result

