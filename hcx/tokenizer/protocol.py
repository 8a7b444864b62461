"""What every stage asks of a tokenizer: the :class:`Tokenizer` protocol and :class:`ChatIds`.

Two implementations keep it: :class:`~hcx.tokenizer.tokenizer.HcxTokenizer` (hcx's own
byte-level BPE, the default for from-scratch runs) and
:class:`~hcx.tokenizer.hf_tokenizer.HfTokenizer` (a model's own ``tokenizer.json`` and
chat template). :func:`hcx.tokenizer.load` picks one from the directory. On both, special-token
strings typed inside text encode as ordinary text (SPEC §2): only :meth:`Tokenizer.encode_chat`
and :meth:`Tokenizer.token_id` give special ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Conversation = Mapping[str, Any] | Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class ChatIds:
    """A rendered conversation: token ids and, per id, whether it is trained on (assistant turns)."""

    ids: list[int]
    assistant_mask: list[bool]


@runtime_checkable
class Tokenizer(Protocol):
    path: Path

    @property
    def vocab_size(self) -> int: ...

    @property
    def special_tokens(self) -> dict[str, int]: ...

    def token_id(self, special: str) -> int:
        """Id of a special token string; KeyError when the tokenizer has none of that name."""
        ...

    @property
    def eot_id(self) -> int:
        """End of text: closes a document (pretraining's separator, a completion's natural end)."""
        ...

    @property
    def bos_id(self) -> int:
        """What a document starts with: a completion prompt's and lm-eval's empty-context prefix."""
        ...

    @property
    def adds_bos(self) -> bool:
        """Whether the tokenizer's own files put :attr:`bos_id` before every text ``transformers``
        encodes (Llama, Mistral): lm-eval's hf backend scores texts that way."""
        ...

    @property
    def end_of_turn_id(self) -> int:
        """The token that closes an assistant turn in the chat format (generation stops on it)."""
        ...

    @property
    def pad_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens included; a character cut mid-way decodes as U+FFFD."""
        ...

    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...

    def encode_chat(
        self,
        conversation: Conversation,
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChatIds:
        """Ids of a ``{"messages": [...]}`` conversation in the chat format; the mask marks the
        assistant replies and the end-of-turn token closing each (what SFT trains on). ``tools``
        (OpenAI ``tools`` shape) go to the chat format's tool markup; messages may then carry
        ``tool_calls`` (assistant) and have the role ``tool``."""
        ...
