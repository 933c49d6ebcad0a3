import subprocess
import sys

import pytest

# Allocates, touches and frees a 64 MiB block five times and prints the page faults it took: glibc mmaps a block
# that large and unmaps it when freed, so by default every round faults all 16,384 of its pages in again.
PROGRAM = """
import resource, sys
from genesis_train.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
block = bytearray(64 << 20)  # the first round faults its pages in either way
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    block = bytearray(64 << 20)
    del block
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True).stdout
    applied, count = out.split()
    return applied, int(count)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_retained_blocks_are_reused_without_page_faults():
    _, default_faults = faults("default")
    applied, retained_faults = faults("retain")
    assert applied == "True"
    assert default_faults >= 5 * 16384 * 0.9  # the reference: every round faults the whole block in
    assert retained_faults < 500
