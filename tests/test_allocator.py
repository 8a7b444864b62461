"""glibc's allocator thresholds, fixed when hcx is imported (hcx.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hcx.allocator import GLIBC_SETTINGS


def fresh_python(code: str, *args: str, **env: str) -> str:
    """Standard output of ``code`` in a new interpreter, without any allocator setting of ours."""
    clean = {k: v for k, v in os.environ.items() if k not in ("HCX_MALLOC_TUNING", *GLIBC_SETTINGS)}
    command = [sys.executable, "-c", code, *args]
    return subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, check=True).stdout


def tuned_in_fresh_process(**env: str) -> bool:
    return fresh_python("import hcx; print(hcx.ALLOCATOR_TUNED)", **env).strip() == "True"


def test_importing_hcx_fixes_the_thresholds_on_glibc():
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.fail("these tests run on Linux with glibc (the CI image)")
    assert tuned_in_fresh_process()


def test_the_user_can_keep_glibc_defaults_or_their_own_settings():
    assert not tuned_in_fresh_process(HCX_MALLOC_TUNING="0")
    assert not tuned_in_fresh_process(MALLOC_TRIM_THRESHOLD_="1048576")
    assert not tuned_in_fresh_process(MALLOC_MMAP_THRESHOLD_="1048576")


FAULTS_PER_STEP = """
import ctypes, resource, sys, torch
from hcx.allocator import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
if sys.argv[1] == "initial":  # glibc's starting thresholds, fixed: its later ones depend on what was freed before
    libc = ctypes.CDLL(None)
    assert libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024) and libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
def step():  # a step's few vocabulary-wide temporaries: four 2 MiB tensors, written, then freed
    tensors = [torch.ones(512 * 1024) for _ in range(4)]
    del tensors
for _ in range(5):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(thresholds: str) -> float:
    env = {"HCX_MALLOC_TUNING": "0"} if thresholds == "initial" else {}
    return float(fresh_python(FAULTS_PER_STEP, thresholds, **env))


def test_freed_tensors_are_reused_without_page_faults():
    """With glibc's starting thresholds (128 KiB) each 2 MiB tensor is a fresh mapping, faulted in
    page by page at every step (4 × 512 pages); with hcx's the next step reuses the freed memory."""
    assert faults_per_step("hcx") < 50
    assert faults_per_step("initial") > 1000
