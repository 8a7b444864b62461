"""glibc's allocator thresholds, fixed when hcx is imported (hcx.allocator)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def tuned_in_fresh_process(**env: str) -> bool:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HCX_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    }
    done = subprocess.run(
        [sys.executable, "-c", "import hcx; print(hcx.ALLOCATOR_TUNED)"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip() == "True"


def test_importing_hcx_fixes_the_thresholds_on_glibc():
    if not os.confstr("CS_GNU_LIBC_VERSION"):
        pytest.fail("these tests run on Linux with glibc (the CI image)")
    assert tuned_in_fresh_process()


def test_the_user_can_keep_glibc_defaults_or_their_own_settings():
    assert not tuned_in_fresh_process(HCX_MALLOC_TUNING="0")
    assert not tuned_in_fresh_process(MALLOC_TRIM_THRESHOLD_="1048576")
    assert not tuned_in_fresh_process(MALLOC_MMAP_THRESHOLD_="1048576")


FAULTS_PER_STEP = """
import resource, torch, hcx
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


def faults_per_step(**env: str) -> float:
    clean = {k: v for k, v in os.environ.items() if k != "HCX_MALLOC_TUNING"}
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def test_freed_tensors_are_reused_without_page_faults():
    """glibc's defaults hand the freed 8 MiB back to the system at every step and fault it in again
    (4 × 512 pages); with the thresholds fixed the next step reuses it."""
    assert faults_per_step() < 50
    assert faults_per_step(HCX_MALLOC_TUNING="0") > 1000
