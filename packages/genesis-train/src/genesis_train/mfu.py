"""Model FLOPs utilization: the training FLOPs a step's tokens need (genesis-model's count) over the device's peak.

The peak is the datasheet's dense bf16/fp16 tensor-core figure for GPUs whose figure is known, and otherwise (the CPU,
other GPUs, fp32) the rate of a square matrix product in the run's dtype measured once at start, so the CPU's MFU is
relative to what its BLAS reaches, not to a theoretical peak.
"""

from __future__ import annotations

import time

import torch

# Dense (no sparsity) bf16/fp16 tensor-core FLOP/s from the vendors' datasheets.
DATASHEET_PEAKS = {"H100 SXM": 989.4e12, "H100 NVL": 835.5e12, "H100 PCIe": 756.5e12, "H200": 989.4e12,
                   "A100": 312e12}


def datasheet_peak(device: torch.device, dtype: torch.dtype) -> float | None:
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    if "H100" in name and not any(variant in name for variant in ("NVL", "PCIe")):
        name += " SXM"  # the SXM part reports itself as plain "H100" or "H100 80GB HBM3"
    return next((peak for part, peak in DATASHEET_PEAKS.items() if all(w in name for w in part.split())), None)


def measured_matmul_peak(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of the fastest of a few square products in `dtype` (fp32 accumulation as in training)."""
    n = 4096 if device.type == "cuda" else 1024
    # A private generator: the run's own random stream must not depend on this measurement.
    a, b = torch.rand(2, n, n, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first product warms the library up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """The peak MFU is measured against, and where it comes from ("datasheet" or "measured")."""
    peak = datasheet_peak(device, dtype)
    if peak is not None:
        return peak, "datasheet"
    return measured_matmul_peak(device, dtype), "measured"
