"""genesis_train: the training loop and what watches it.

config         TrainConfig (dataclass; every field an option and a TOML key), build_config, ConfigError, TrainingError
trainer        Trainer, train(cfg): data -> model -> loss -> backward -> AdamW, evaluation, checkpoints, resume
distributed    one process or several under torchrun: DDP, or FSDP2 with --fsdp
checkpointing  atomic checkpoint directories, keep-last-K, the sharded optimizer state
optim          AdamW / Adam with weight decay on matrices, warmup + cosine schedule
grokfast       the Grokfast-EMA gradient filter
callbacks/     the measures: weight norms, grokking detection, cross-translation alignment, concept clustering
metrics        metrics.jsonl, TensorBoard, the progress line;  plot: `genesis-train plot`
preflight, mfu, allocator, interrupt: the fit check, peak FLOP/s, the CPU allocator setting, stopping on signals
cli            `genesis-train` (also `python -m genesis_train`, the form torchrun runs)

    from genesis_train import TrainConfig, train
    train(TrainConfig(mode="tiny", steps=200))
"""

from genesis_train.config import ConfigError, TrainConfig, TrainingError, build_config

__all__ = ["ConfigError", "TrainConfig", "Trainer", "TrainingError", "build_config", "train"]


def __getattr__(name: str):
    # The loop imports the data pipeline and the measures (seconds): only when asked for, so that the command line
    # answers a bad option without paying for them.
    if name in ("Trainer", "train"):
        from genesis_train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'genesis_train' has no attribute {name!r}")
