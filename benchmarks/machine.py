"""What every benchmark states about the machine it ran on, and the matmul peak it measures.

Imported by the scripts beside it (``from machine import describe``): a benchmark's ratio
means little without the CPU or GPU, the core count and the torch threads it ran on.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from hcx.model.precision import native_bf16


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe(device: torch.device | None = None) -> str:
    """One line: the processor, its cores, torch's threads and whether it computes bfloat16 natively."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    bf16 = "native bfloat16" if native_bf16(device) else "no native bfloat16"
    return (
        f"machine: {name} ({device.type}), {os.cpu_count()} cores, torch {torch.__version__} "
        f"threads={torch.get_num_threads()}, {bf16}"
    )


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """The best rate of ``size``³ matrix products in ``dtype`` on ``device``: the machine's attainable
    matmul peak at the current thread count, against which a model's FLOP/s is a share."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first one warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9
