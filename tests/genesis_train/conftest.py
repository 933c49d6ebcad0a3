import pytest

from genesis_train.config import TrainConfig


@pytest.fixture(autouse=True)
def torch_kernels(monkeypatch):
    # The root conftest turns the Triton interpreter on for the kernel tests; training tests use the fallback.
    monkeypatch.setenv("GENESIS_KERNELS_BACKEND", "torch")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One tokenizer/token cache for all training tests: the first test trains the tokenizer, others reuse it."""
    return tmp_path_factory.mktemp("genesis-cache")


@pytest.fixture
def quick_config(tmp_path, cache_dir):
    """A tiny run that takes seconds on a CPU: the 'tiny' preset on short blocks, a small BPE vocabulary."""
    def make(**overrides) -> TrainConfig:
        values = dict(mode="tiny", steps=40, batch_size=8, block_size=64, vocab_size=512, lr=3e-3, min_lr=3e-4,
                      warmup_steps=5, eval_interval=20, eval_batches=4, log_interval=5, checkpoint_interval=20,
                      out_dir=str(tmp_path / "run"), cache_dir=str(cache_dir), device="cpu", progress=False)
        values.update(overrides)
        cfg = TrainConfig(**values)
        cfg.validate()
        return cfg
    return make
