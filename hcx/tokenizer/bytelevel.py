"""Byte-level vocabulary helpers: GPT-2's byte↔character map and tiktoken-compatible merges.

``tokenizers`` stores byte-level tokens as printable characters (byte 0x20 → "Ġ");
``tiktoken`` stores raw bytes ranked by id. The hcx tokenizer is saved in the first
form and encoded with the second (for speed), so both views must give the same ids.
tiktoken merges, at each step, the adjacent pair whose *concatenation* has the lowest
rank; Hugging Face BPE merges the adjacent pair with the lowest *listed merge*. Listing
for every token the pair tiktoken itself would join to build it (:func:`canonical_merges`)
makes the two algorithms agree.
"""

from __future__ import annotations

from functools import cache


@cache
def byte_to_char() -> dict[int, str]:
    """GPT-2's map: printable bytes stand for themselves, the rest move to U+0100 onwards."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@cache
def char_to_byte() -> dict[str, int]:
    return {c: b for b, c in byte_to_char().items()}


def token_bytes(token: str) -> bytes:
    """Raw bytes of a byte-level token string; KeyError if it is not byte-level."""
    table = char_to_byte()
    return bytes(table[c] for c in token)


def token_string(raw: bytes) -> str:
    table = byte_to_char()
    return "".join(table[b] for b in raw)


def tiktoken_parts(raw: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """The parts tiktoken ends with for ``raw`` when only tokens ranked below ``below`` exist."""
    parts = [raw[i : i + 1] for i in range(len(raw))]
    while len(parts) > 1:
        best_rank, best_at = below, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best_at = rank, i
        if best_at < 0:
            break
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return parts


def canonical_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges in rank order, each the pair tiktoken joins last when it builds that token.

    A token that tiktoken cannot build from its own bytes (its process stops at three or
    more parts) gets no merge: both engines then produce it only when a whole regex piece
    equals it, since the saved model ignores merges for pieces already in the vocabulary.
    """
    merges = []
    for raw, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(raw) < 2:
            continue
        parts = tiktoken_parts(raw, ranks, rank)
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    return merges
