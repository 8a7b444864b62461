"""``dtype: auto``: bfloat16 where the CPU or GPU multiplies it natively, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hcx.model.load import resolve_device
from hcx.model.precision import auto_dtype, compute_dtype, cpu_has_native_bf16
from hcx.train.config import PretrainConfig

SAPPHIRE_RAPIDS = "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
ICE_LAKE = "flags\t\t: fpu vme sse2 avx2 avx512f avx512bw avx512_vnni\n"
GRAVITON3 = "Features\t: fp asimd aes sha3 sve i8mm bf16 svebf16\n"
GRAVITON2 = "Features\t: fp asimd aes sha3 dotprod\n"


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(SAPPHIRE_RAPIDS, True), (ICE_LAKE, False), (GRAVITON3, True), (GRAVITON2, False), ("", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path, cpuinfo: str, native: bool) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: some CPU\n" + cpuinfo + "\nprocessor\t: 1\n" + cpuinfo)
    assert cpu_has_native_bf16(path) is native


def test_auto_follows_this_machine() -> None:
    flags = Path("/proc/cpuinfo").read_text()
    native = any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))
    expected = torch.bfloat16 if native else torch.float32
    cpu = torch.device("cpu")
    assert auto_dtype(cpu) == expected
    assert compute_dtype("auto", cpu) == expected
    assert resolve_device("cpu", "auto") == (cpu, expected)
    assert compute_dtype("float32", cpu) == torch.float32
    assert compute_dtype("bfloat16", cpu) == torch.bfloat16


def test_training_defaults_to_auto() -> None:
    assert PretrainConfig().dtype == "auto"
