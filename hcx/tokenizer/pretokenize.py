"""The pre-tokenization regex shared by training, the saved ``tokenizer.json`` and the fast encoder.

Byte-level BPE merges only inside the pieces this regex cuts (SPEC §2). It is the
GPT-4 / Llama 3 pattern: English contractions, a word with at most one leading
space or punctuation mark, numbers in groups of at most three digits, punctuation
runs, and whitespace runs that leave the last space to the next word. Korean words
("형태소를") come out whole here; the morpheme boundaries inside them are applied at
training time only (see :mod:`hcx.tokenizer.morphemes`), so encoding needs no Kiwi.

The same string drives the Rust ``tokenizers`` pre-tokenizer and ``tiktoken``; both
engines must cut identically, which the parity tests check.
"""

from __future__ import annotations

from tokenizers import Regex, pre_tokenizers

PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def regex_splitter() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(PATTERN), behavior="isolated", invert=False)


def byte_level_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """What the saved tokenizer runs: regex pieces, then bytes mapped to printable characters."""
    return pre_tokenizers.Sequence(
        [regex_splitter(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )


_SPLITTER = regex_splitter()


def split_words(text: str) -> list[str]:
    """Cut ``text`` into the pieces BPE merges within (Rust regex, no byte mapping)."""
    return [piece for piece, _ in _SPLITTER.pre_tokenize_str(text)]
