"""Which dtype ``auto`` means: bfloat16 wherever the hardware multiplies it natively, else float32.

GPUs from Ampere on and CPUs with AVX512-BF16 or AMX (x86) or the BF16 extension (Arm) run
bfloat16 matrix products at two to four times the float32 rate; elsewhere bfloat16 is
emulated and slower than float32, so ``auto`` falls back to it. Training keeps float32 master
weights either way (:mod:`hcx.train.trainer`); this module only answers the question.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch

CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""``/proc/cpuinfo`` flags (x86) or features (Arm) of a CPU with native bfloat16 arithmetic."""


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (read from ``cpuinfo`` on Linux; False elsewhere,
    Apple silicon included, whose BF16 instructions PyTorch's CPU kernels do not use)."""
    if platform.system() != "Linux" or not cpuinfo.exists():
        return False
    for line in cpuinfo.read_text(errors="replace").splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return not CPU_BF16_FLAGS.isdisjoint(value.split())
    return False


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def auto_dtype(device: torch.device) -> torch.dtype:
    """What ``dtype: auto`` means on ``device``."""
    return torch.bfloat16 if native_bf16(device) else torch.float32


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """A config's ``dtype`` (``auto``, ``bfloat16`` or ``float32``) as the torch dtype used on ``device``."""
    if name == "auto":
        return auto_dtype(device)
    return {"bfloat16": torch.bfloat16, "float32": torch.float32}[name]
