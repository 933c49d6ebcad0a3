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
