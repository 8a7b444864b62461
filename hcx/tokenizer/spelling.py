"""How an existing BPE tokenizer spells text in its token strings, and which strings belong to a script.

Two kinds of base tokenizer are read (:func:`spelling_of`):

- byte-level BPE (GPT-2's byte→character map; hcx, Polyglot-Ko, Llama 3 style): every token
  stands for raw bytes, possibly part of a character;
- SentencePiece-style BPE (Llama 2, Mistral): tokens are text with ``▁`` for a space, and a
  character missing from the vocabulary is spelled by byte-fallback tokens ``<0xNN>``.

:func:`pins_script` is what vocabulary extension relies on to leave other text alone: a byte
string that pins a script can occur only inside text that contains a character of that script.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hcx.tokenizer.bytelevel import token_bytes
from hcx.tokenizer.morphemes import HANGUL_RANGES

METASPACE = "▁"
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SURROGATES = (0xD800, 0xDFFF)

SCRIPTS: dict[str, tuple[tuple[int, int], ...]] = {"ko": HANGUL_RANGES}


@dataclass(frozen=True)
class Spelling:
    """The bytes behind a base tokenizer's token strings, and how its pre-tokens split into words."""

    byte_level: bool

    def raw(self, token: str) -> bytes:
        if self.byte_level:
            return token_bytes(token)
        if match := _BYTE_FALLBACK.fullmatch(token):
            return bytes([int(match.group(1), 16)])
        return token.replace(METASPACE, " ").encode("utf-8")

    def is_byte_fallback(self, token: str) -> bool:
        return not self.byte_level and _BYTE_FALLBACK.fullmatch(token) is not None

    def words(self, pre_token: str) -> list[str]:
        """Words BPE never merges across: SentencePiece-style text (one pre-token per document
        when the pre-tokenizer does not split) is cut before each ``▁``."""
        if self.byte_level:
            return [pre_token]
        return [w for w in re.split(f"(?={METASPACE})", pre_token) if w]

    def text(self, word: str) -> str:
        return self.raw(word).decode("utf-8", errors="replace")


def _mentions(node: Any, kind: str) -> bool:
    return kind in json.dumps(node, ensure_ascii=False) if node is not None else False


def spelling_of(spec: dict[str, Any], where: str = "tokenizer.json") -> Spelling:
    """The spelling of a parsed ``tokenizer.json``; refuses models other than BPE."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{where}: only BPE tokenizers can be extended, got {model.get('type')!r}")
    if _mentions(spec.get("pre_tokenizer"), '"ByteLevel"'):
        return Spelling(byte_level=True)
    metaspace = _mentions(spec.get("pre_tokenizer"), '"Metaspace"') or _mentions(
        spec.get("normalizer"), METASPACE
    )
    if model.get("byte_fallback") or metaspace:
        return Spelling(byte_level=False)
    raise ValueError(f"{where}: neither byte-level nor SentencePiece-style (▁ with byte fallback)")


def _inside(low: int, high: int, ranges: Sequence[tuple[int, int]]) -> bool:
    """Every valid code point in [low, high] lies in ``ranges`` (surrogates are not characters)."""
    spans = [(low, high)]
    if low <= _SURROGATES[1] and high >= _SURROGATES[0]:
        spans = [(low, _SURROGATES[0] - 1), (_SURROGATES[1] + 1, high)]
    merged: list[list[int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return all(any(lo <= a and b <= hi for lo, hi in merged) for a, b in spans if a <= b)


def _sequence_length(lead: int) -> int:
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    return 2 if lead >= 0xC0 else 1


def pins_script(raw: bytes, ranges: Sequence[tuple[int, int]]) -> bool:
    """True when any valid UTF-8 text containing ``raw`` contains a character in ``ranges``.

    Holds when some lead byte in ``raw``, with the continuation bytes after it, leaves only
    code points inside ``ranges``: Hangul's ``EA B0`` (U+AC00–U+AC3F) pins Korean, ``EA``
    alone (U+A000–U+AFFF, Yi and others) does not.
    """
    for i, lead in enumerate(raw):
        if lead < 0xC0:
            continue
        length = _sequence_length(lead)
        known = [lead & (0xFF >> (length + 1))]
        for byte in raw[i + 1 : i + length]:
            if byte & 0xC0 != 0x80:
                break
            known.append(byte & 0x3F)
        value = 0
        for part in known:
            value = (value << 6) | part
        free_bits = 6 * (length - len(known))
        low = value << free_bits
        if _inside(low, low | ((1 << free_bits) - 1), ranges):
            return True
    return False
