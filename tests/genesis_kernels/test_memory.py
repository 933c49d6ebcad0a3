"""peak_memory on the CPU counts live tensor storages created inside the block."""

import torch

from genesis_kernels.memory import peak_memory


def test_counts_tensors_alive_together():
    with peak_memory("cpu") as peak:
        first = torch.zeros(1000)               # 4000 bytes
        second = torch.zeros(500, dtype=torch.float64)  # 4000 bytes
        del first, second
    assert peak.bytes == 8000


def test_freed_memory_is_reused_not_summed():
    with peak_memory("cpu") as peak:
        for _ in range(3):
            temporary = torch.ones(1000)
            del temporary
    assert peak.bytes == 4000


def test_views_and_inputs_are_not_extra():
    x = torch.randn(100, 10)
    with peak_memory("cpu", (x,)) as peak:
        x.mul_(2)
        rows = x.view(10, 100).t()
        both = rows.contiguous()  # 4000 bytes
        view_of_new = both[:5]
        del rows, view_of_new
    assert peak.bytes == 4000


def test_backward_allocations_are_counted():
    x = torch.randn(256, requires_grad=True)
    with peak_memory("cpu", (x,)) as peak:
        (x * 3).sum().backward()
    assert peak.bytes >= x.grad.nbytes
