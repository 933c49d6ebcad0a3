import os
import random
import zlib

import numpy as np
import pytest
import torch

# The Triton kernels run on the CPU through the interpreter in tests; it must be switched on before any
# kernel module is imported. A GPU machine can opt out with TRITON_INTERPRET=0.
os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    parser.addoption("--seed", type=int, default=0,
                     help="base seed of every test's random draws (torch, numpy, random); each test gets its own "
                          "seed from this and its id, so a run is reproducible and another --seed draws anew")


def pytest_report_header(config):
    return f"genesis test seed: {config.getoption('--seed')} (rerun with --seed N to draw other random inputs)"


def test_seed(base: int, nodeid: str) -> int:
    """The seed of one test: stable across runs, orderings and selections (it does not depend on which tests ran
    before), different for each test and each --seed."""
    return (base * 1_000_003 + zlib.crc32(nodeid.encode())) % 2**32


test_seed.__test__ = False  # a helper, not a test


@pytest.fixture(autouse=True)
def seeded_rngs(request):
    """Every test starts from its own seed in torch, numpy and Python's random: no test draws unseeded inputs,
    and none depends on what an earlier test consumed from a global generator."""
    seed = test_seed(request.config.getoption("--seed"), request.node.nodeid)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    return seed


def _hidden_states_saved_bytes(model: torch.nn.Module, batch: int, seq: int, autocast: bool = True) -> int:
    """Bytes of the distinct tensors autograd keeps for backward in a bf16-autocast (or fp32) forward of a GenesisLM's
    blocks (`hidden_states` of random ids), its weights excluded."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model.hidden_states(ids)
    return sum(nbytes for pointer, nbytes in saved.items() if pointer not in parameters)


@pytest.fixture
def hidden_states_saved_bytes():
    """measure(model, batch, seq, autocast=True): what a model's blocks keep for backward (genesis-model's activation
    estimate and genesis-train's activation checkpointing are both checked against it)."""
    return _hidden_states_saved_bytes
