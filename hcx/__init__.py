"""hcx: an open reference implementation of the HyperCLOVA X system (see SPEC.md)."""

from hcx.allocator import keep_freed_memory

__version__ = "0.1.0"

ALLOCATOR_TUNED = keep_freed_memory()
"""Whether glibc's allocator thresholds were fixed at import (:mod:`hcx.allocator`)."""
