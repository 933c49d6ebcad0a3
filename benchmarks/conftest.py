"""pytest-benchmark wiring: the device names the machine and keys the baseline storage.

A baseline is only meaningful on the device that recorded it, so runs are stored under
benchmarks/baselines/<device-slug>/ (pytest-benchmark adds an interpreter folder such as
Linux-CPython-3.11-64bit below it): `--benchmark-save=NAME` records one there and `--benchmark-compare`
compares with the latest one of this device. An explicit `--benchmark-storage` still wins.
"""

import os
import sys
from pathlib import Path

# The Triton interpreter times numpy, not a kernel; benchmarks run Triton only on CUDA. Must precede any import of
# triton or genesis_kernels.
os.environ.pop("TRITON_INTERPRET", None)

# Test modules import their shared definitions as `benchmarks.workloads` (pytest runs with --import-mode=importlib,
# which puts nothing on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402
import torch  # noqa: E402
from genesis_data.corpus import Corpus  # noqa: E402
from genesis_data.tokenizer import load_or_train_tokenizer  # noqa: E402
from genesis_train.allocator import retain_freed_memory  # noqa: E402

from benchmarks.workloads import DEVICE, VOCAB_SIZE, device_name, device_slug  # noqa: E402

PYTEST_BENCHMARK_DEFAULT_STORAGE = "file://./.benchmarks"
BASELINES = Path(__file__).resolve().parent / "baselines"
DEVICE_NAME = device_name()
DEVICE_STORAGE = BASELINES / device_slug(DEVICE_NAME)
# The allocator settings genesis-train's entry point makes, for the whole run and so for every implementation alike:
# without them each CPU training step faults its logits-sized tensors in afresh (see genesis_train/allocator.py).
RETAINS_FREED_MEMORY = retain_freed_memory()


def pytest_configure(config):
    # Runs before pytest-benchmark's own pytest_configure (trylast), which opens the storage.
    if config.getoption("benchmark_storage", None) == PYTEST_BENCHMARK_DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{DEVICE_STORAGE}"


def pytest_report_header(config):
    storage = config.getoption("benchmark_storage", None)
    lines = [f"benchmark device: {DEVICE_NAME} ({DEVICE.type}, {torch.get_num_threads()} CPU threads); storage: {storage}"]
    if config.getoption("benchmark_compare", None) and storage == f"file://{DEVICE_STORAGE}":
        if not any(DEVICE_STORAGE.glob("*/*.json")):
            lines.append(
                f"NO BASELINE for {DEVICE_NAME!r}: nothing in {DEVICE_STORAGE.relative_to(BASELINES.parent.parent)}/ "
                "to compare with; record one with `pytest benchmarks/ --benchmark-save=baseline`"
            )
    return lines


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["device"] = DEVICE_NAME
    machine_info["device_type"] = DEVICE.type
    machine_info["torch"] = torch.__version__
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["retains_freed_memory"] = RETAINS_FREED_MEMORY
    if DEVICE.type == "cuda":
        machine_info["cuda"] = torch.version.cuda


# -- data shared by the tokenizer and sampler groups ------------------------------------------------------------------

@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory):
    """A fresh cache for tokenizers and token arrays: every run trains and tokenizes from scratch (untimed), so no
    state left in ~/.cache changes what is measured."""
    return tmp_path_factory.mktemp("genesis-cache")


@pytest.fixture(scope="session")
def builtin_corpus():
    pytest.importorskip("pythonbible", reason="the built-in corpus needs pythonbible")
    return Corpus.builtin()


@pytest.fixture(scope="session")
def bpe_tokenizer_path(builtin_corpus, data_cache_dir):
    return load_or_train_tokenizer(builtin_corpus, "bpe", VOCAB_SIZE, data_cache_dir)
