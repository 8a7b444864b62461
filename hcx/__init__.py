"""hcx: an open reference implementation of the HyperCLOVA X system (see SPEC.md)."""

__version__ = "0.1.0"
