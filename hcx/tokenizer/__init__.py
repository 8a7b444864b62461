"""Morphology-aware byte-level BPE tokenizer (SPEC §2): ``load`` and ``train_tokenizer``; any
Hugging Face tokenizer behind the same :class:`Tokenizer` protocol.

Attributes load lazily so that ``hcx.tokenizer.specials`` stays a cheap import for other stages.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "ChatIds": "hcx.tokenizer.protocol",
    "ChatTokens": "hcx.tokenizer.config",
    "HcxTokenizer": "hcx.tokenizer.tokenizer",
    "HfTokenizer": "hcx.tokenizer.hf_tokenizer",
    "Tokenizer": "hcx.tokenizer.protocol",
    "TokenizerFormatError": "hcx.tokenizer.tokenizer",
    "load": "hcx.tokenizer.tokenizer",
    "train_tokenizer": "hcx.tokenizer.train",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hcx.tokenizer' has no attribute {name!r}")
