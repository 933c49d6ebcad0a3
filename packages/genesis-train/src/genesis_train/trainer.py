"""The training loop: data -> model -> loss -> backward -> AdamW + schedule -> metrics, evaluation, checkpoints.

Each batch holds one task (drawn by the sampler's weights); with gradient accumulation a step mixes tasks.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from genesis_data.corpus import Corpus
from genesis_data.sampler import MultiTaskSampler
from genesis_data.tokenizer import load_or_train_tokenizer
from genesis_model import PRESETS, CheckpointError, GenesisTokenizer, ModelConfig, MultiTaskModel
from genesis_train.checkpointing import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from genesis_train.config import ConfigError, TrainConfig
from genesis_train.metrics import MetricsLog, Progress
from genesis_train.optim import build_optimizer, build_scheduler

Batch = dict[str, Any]


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(cfg.device)


def resolve_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, cfg.dtype)


def load_corpus(cfg: TrainConfig) -> Corpus:
    if cfg.bible_dir:
        return Corpus.from_bible_dir(Path(cfg.bible_dir), cache_dir=cfg.cache_path)
    if cfg.text_file:
        return Corpus.from_text_file(Path(cfg.text_file))
    return Corpus.builtin(cache_dir=cfg.cache_path)


def count_tokens(batch: Batch) -> int:
    """Tokens the model reads in a batch: every real token of every sequence in it."""
    masks = [v for k, v in batch.items() if k.endswith("mask")]
    if masks:
        return int(sum(int(m.sum()) for m in masks))
    return batch["input_ids"].numel()


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, log=print):
        if cfg.mode not in PRESETS:
            raise ConfigError(f"--mode {cfg.mode!r} is not a preset; choose one of {', '.join(PRESETS)}")
        self.cfg, self.log = cfg, log
        self.run_dir = cfg.run_dir
        self.device = resolve_device(cfg)
        self.dtype = resolve_dtype(cfg, self.device)
        torch.manual_seed(cfg.seed)

        try:
            self._setup_data(cfg)
        except (ValueError, FileNotFoundError) as e:
            # genesis-data reports bad files and impossible settings this way, naming the file:line or option
            raise ConfigError(str(e)) from e

        self.step = 0
        resume_from = latest_checkpoint(self.run_dir) if cfg.resume else None
        if resume_from is not None:
            try:
                self.model, state = load_checkpoint(resume_from)
            except CheckpointError as e:
                raise ConfigError(f"--resume: {e}") from e
            # Gradient checkpointing is a runtime choice that may change between a run and its resumption.
            self.model.config.gradient_checkpointing = cfg.gradient_checkpointing
            if self.model.config != self.model_config:
                raise ConfigError(f"--resume: {resume_from} holds a model of another shape or configuration than "
                                  f"--mode {cfg.mode}; use another --out-dir or the same options")
        else:
            self.model = MultiTaskModel(self.model_config)
        self.model.to(self.device)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if resume_from is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.sampler.load_state_dict(state["sampler"])
            set_rng_state(state["rng"])
            self.step = state["step"]
            self.log(f"resumed from {resume_from} at step {self.step}")
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl", resume_step=self.step if resume_from else None)

    def _setup_data(self, cfg: TrainConfig) -> None:
        corpus = load_corpus(cfg)
        self.tokenizer_file = load_or_train_tokenizer(corpus, kind=cfg.tokenizer, vocab_size=cfg.vocab_size,
                                                      cache_dir=cfg.cache_path)
        vocab = GenesisTokenizer.from_file(self.tokenizer_file).vocab_size
        preset = PRESETS[cfg.mode]
        block_size = cfg.block_size or preset.max_seq_len
        self.model_config = ModelConfig.from_preset(
            cfg.mode,
            vocab_size=64 * math.ceil(vocab / 64),  # a multiple of 64 keeps the output matmul on fast paths
            max_seq_len=max(block_size, preset.max_seq_len),
            norm_position=cfg.norm_position,
            gradient_checkpointing=cfg.gradient_checkpointing,
        )
        self.sampler = MultiTaskSampler(corpus, self.tokenizer_file, block_size=block_size, batch_size=cfg.batch_size,
                                        weights=cfg.task_weights, seed=cfg.seed,
                                        cross_references=Path(cfg.cross_references) if cfg.cross_references else None,
                                        cache_dir=cfg.cache_path)
        self.val_batches = [to_device(b, self.device) for b in self.sampler.validation_batches(cfg.eval_batches)]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        with self.autocast():
            losses = [float(self.forward(b)["loss"]) for b in self.val_batches]
        self.model.train()
        return sum(losses) / len(losses)

    def train_step(self) -> tuple[dict[str, list[torch.Tensor]], int]:
        # Losses stay on the device until a log line needs them: no host sync per micro-batch.
        task_losses: dict[str, list[torch.Tensor]] = defaultdict(list)
        tokens = 0
        for _ in range(self.cfg.grad_accum):
            batch = next(self.sampler)
            tokens += count_tokens(batch)
            with self.autocast():
                loss = self.forward(to_device(batch, self.device))["loss"]
            self.scaler.scale(loss / self.cfg.grad_accum).backward()
            task_losses[batch["task"]].append(loss.detach())
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return task_losses, tokens

    def save(self) -> Path:
        state = {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": rng_state(),
        }
        return save_checkpoint(self.run_dir, self.step, self.model, self.tokenizer_file, state, self.cfg)

    def _due(self, interval: int) -> bool:
        """Periodic work happens every `interval` steps and at the last step."""
        return self.step % interval == 0 or self.step == self.cfg.steps

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        n_params = sum(p.numel() for p in self.model.parameters())
        self.log(f"{cfg.mode}: {n_params / 1e6:.2f}M parameters, {self.device} {str(self.dtype).removeprefix('torch.')}, "
                 f"tasks {', '.join(self.sampler.tasks)}, run dir {self.run_dir}")
        self.model.train()
        if self.step == 0:
            first_val = self.evaluate()
            self.metrics.write({"step": 0, "val_loss": first_val})
        progress = Progress(cfg.steps, start=self.step, enabled=cfg.progress)
        window: dict[str, list[torch.Tensor]] = defaultdict(list)
        window_tokens, window_t0 = 0, time.perf_counter()
        last_val = None if self.step < cfg.steps else self.evaluate()
        try:
            while self.step < cfg.steps:
                task_losses, tokens = self.train_step()
                self.step += 1
                for task, values in task_losses.items():
                    window[task].extend(values)
                window_tokens += tokens
                record: dict[str, Any] = {}
                if self._due(cfg.log_interval):
                    elapsed = time.perf_counter() - window_t0
                    record = {f"loss_{t}": torch.stack(v).float().mean().item() for t, v in window.items()}
                    record.update(lr=self.scheduler.get_last_lr()[0], tokens_per_s=window_tokens / elapsed)
                    window.clear()
                    window_tokens, window_t0 = 0, time.perf_counter()
                if self._due(cfg.eval_interval):
                    last_val = record["val_loss"] = self.evaluate()
                if record:
                    self.metrics.write({"step": self.step, **record})
                    shown = " ".join(f"{k.removeprefix('loss_')} {v:.3f}" for k, v in record.items()
                                     if k.startswith("loss_") or k == "val_loss")
                    if "tokens_per_s" in record:
                        shown += f" | {record['tokens_per_s']:,.0f} tok/s"
                    progress.update(self.step, shown)
                if self._due(cfg.checkpoint_interval):
                    self.save()
        finally:
            progress.close()
            self.metrics.close()
        final = latest_checkpoint(self.run_dir)
        self.log(f"done: val loss {last_val:.3f} at step {self.step}; checkpoint {final}; "
                 f"metrics {self.metrics.path}")
        return {"step": self.step, "val_loss": last_val, "checkpoint": final}


def train(cfg: TrainConfig, log=print) -> dict[str, Any]:
    return Trainer(cfg, log=log).fit()

