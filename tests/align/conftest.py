from __future__ import annotations

from tests.tokenizer.conftest import tok, tokenizer_dir

__all__ = ["tok", "tokenizer_dir"]
