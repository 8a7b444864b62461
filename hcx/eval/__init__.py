"""Evaluation (SPEC §6): lm-eval tasks on local or hub items, the ``hcx`` backend, suites, reports.

The public names load lazily, so light modules (``hcx.eval.suites``) import without lm-eval
and matplotlib; importing :mod:`hcx.eval.backend` (which :func:`evaluate` does) registers the
``hcx`` model with lm-eval.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {"evaluate": "hcx.eval.api", "EvalReport": "hcx.eval.report", "radar_chart": "hcx.eval.radar"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hcx.eval' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
