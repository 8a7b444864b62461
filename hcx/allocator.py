"""Keep freed memory for reuse: glibc's allocator thresholds for a PyTorch process on the CPU.

glibc serves a request above its mmap threshold with a fresh mapping and gives the top of the
heap back to the system once more than its trim threshold is free there; memory it maps anew
is paid for in page faults when first written. The thresholds start at 128 KiB and move as
blocks are freed, but a model's steps still met fresh pages at every vocabulary-wide tensor:
the engine's decode step of the tiny model at 64 rows took 9.0–9.2 ms on the 2-core Xeon,
6.4–6.6 ms with the thresholds fixed at 32 MiB (mmap, glibc's largest) and 64 MiB (trim),
measured by ``benchmarks/decode_step.py``. Fixed, freed blocks stay in the heap for the next request, as
PyTorch's caching allocator keeps them on a GPU; the price is a resident size that stays near
its peak instead of shrinking.

:func:`keep_freed_memory` runs once when ``hcx`` is imported. It does nothing off Linux/glibc,
with ``HCX_MALLOC_TUNING=0``, or when glibc's own ``MALLOC_MMAP_THRESHOLD_`` or
``MALLOC_TRIM_THRESHOLD_`` is set (the user's setting wins).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
GLIBC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; whether both were set."""
    if os.environ.get("HCX_MALLOC_TUNING", "1") == "0" or any(k in os.environ for k in GLIBC_SETTINGS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):  # musl and others: other allocators, other knobs
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
