"""The special tokens of the hcx tokenizer (SPEC §2).

Their ids are the first ids of the vocabulary, in this order. They are emitted only by
code that builds chat and fill-in-the-middle sequences; the same strings typed inside
ordinary text encode as ordinary text.
"""

from __future__ import annotations

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|endofturn|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_MIDDLE = "<|fim_middle|>"

SPECIAL_TOKENS: tuple[str, ...] = (
    END_OF_TEXT,
    PAD,
    SYSTEM,
    USER,
    ASSISTANT,
    END_OF_TURN,
    FIM_PREFIX,
    FIM_SUFFIX,
    FIM_MIDDLE,
)
