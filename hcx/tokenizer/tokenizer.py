"""The hcx tokenizer at run time: load a saved directory, encode, decode, format chats.

Encoding runs on ``tiktoken`` built from the saved ``tokenizer.json`` (same regex, same
vocabulary, ids as ranks): it is several times faster than the Rust ``tokenizers`` BPE on
one thread, and the merges were saved so that both give the same ids (checked by the
parity tests and by ``transformers.AutoTokenizer`` on real documents).

Special-token strings inside text are encoded as ordinary text (SPEC §2); only
:meth:`HcxTokenizer.encode_chat` and code that asks for :meth:`HcxTokenizer.token_id`
emit special ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tiktoken

from hcx.records import read_json_file
from hcx.tokenizer.bytelevel import token_bytes
from hcx.tokenizer.chat import chat_segments
from hcx.tokenizer.hf_files import TOKENIZER_FILE
from hcx.tokenizer.pretokenize import PATTERN
from hcx.tokenizer.protocol import ChatIds, Tokenizer
from hcx.tokenizer.specials import END_OF_TEXT, END_OF_TURN, PAD, SPECIAL_TOKENS

if TYPE_CHECKING:
    from hcx.tokenizer.config import ChatTokens


class TokenizerFormatError(ValueError):
    """A tokenizer file that is not an hcx byte-level BPE; the message names the file."""


class NotHcxTokenizer(TokenizerFormatError):
    """A valid JSON tokenizer of another kind (:func:`load` hands it to ``HfTokenizer``)."""


def _find_pattern(node: Any) -> str | None:
    if isinstance(node, dict):
        if node.get("type") == "Split":
            return node.get("pattern", {}).get("Regex")
        for child in node.get("pretokenizers", []):
            if (found := _find_pattern(child)) is not None:
                return found
    return None


def _read_vocab(path: Path) -> dict[str, int]:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path} (train one with `hcx tokenizer train`)")
    spec = read_json_file(path, TokenizerFormatError, what="JSON tokenizer file")
    model = spec.get("model") if isinstance(spec, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise NotHcxTokenizer(f"{path}: expected a Hugging Face byte-level BPE tokenizer.json")
    if _find_pattern(spec.get("pre_tokenizer")) != PATTERN:
        raise NotHcxTokenizer(f"{path}: pre-tokenizer is not the hcx regex; not an hcx tokenizer")
    vocab: dict[str, int] = model["vocab"]
    for i, special in enumerate(SPECIAL_TOKENS):
        if vocab.get(special) != i:
            raise TokenizerFormatError(f"{path}: special token {special} must have id {i}")
    return vocab


class HcxTokenizer:
    """Encode/decode with the hcx vocabulary; see :func:`load`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        self.path = path / TOKENIZER_FILE if path.is_dir() else path
        vocab = _read_vocab(self.path)
        specials = {t: vocab[t] for t in SPECIAL_TOKENS}
        try:
            ranks = {token_bytes(t): i for t, i in vocab.items() if t not in specials}
        except KeyError:
            raise TokenizerFormatError(f"{self.path}: vocabulary is not byte-level") from None
        self._encoding = tiktoken.Encoding(
            name=f"hcx:{self.path}", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
        self._specials = specials

    @property
    def vocab_size(self) -> int:
        return self._encoding.n_vocab

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def token_id(self, special: str) -> int:
        """Id of a special token string such as ``"<|user|>"``."""
        try:
            return self._specials[special]
        except KeyError:
            raise KeyError(f"{special!r} is not a special token; known: {list(self._specials)}") from None

    @property
    def eot_id(self) -> int:
        """End of text: separates documents in pretraining (not the chat end-of-turn)."""
        return self._specials[END_OF_TEXT]

    @property
    def bos_id(self) -> int:
        """Documents start after ``<|endoftext|>`` as well (pretraining packs them that way)."""
        return self._specials[END_OF_TEXT]

    @property
    def adds_bos(self) -> bool:
        return False

    @property
    def end_of_turn_id(self) -> int:
        return self._specials[END_OF_TURN]

    @property
    def pad_id(self) -> int:
        return self._specials[PAD]

    def encode(self, text: str) -> list[int]:
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """Encode many texts; threads take contiguous chunks of documents.

        tiktoken's own batch call submits one thread-pool task per document, whose overhead
        dominates on short documents (most Korean sentences); one task per chunk does not.
        """
        texts = list(texts)
        if num_threads <= 1 or len(texts) < 2 * num_threads:
            return self._encode_list(texts)
        size = -(-len(texts) // num_threads)
        chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(num_threads) as pool:
            return [ids for chunk in pool.map(self._encode_list, chunks) for ids in chunk]

    def _encode_list(self, texts: list[str]) -> list[list[int]]:
        encode = self._encoding.encode_ordinary
        return [encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; bytes cut mid-character (a partial sequence) decode as U+FFFD."""
        return self._encoding.decode(list(ids), errors="replace")

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        return self._encoding.decode_bytes(list(ids))

    def encode_chat(
        self,
        conversation: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> ChatIds:
        """Ids of a ``{"messages": [...]}`` conversation with the turn tokens (SPEC §5.1), ``tools``
        described in the system turn (:mod:`hcx.tokenizer.tool_markup`)."""
        ids: list[int] = []
        mask: list[bool] = []
        for segment in chat_segments(conversation, add_generation_prompt, tools):
            piece = [self._specials[segment.text]] if segment.special else self.encode(segment.text)
            ids.extend(piece)
            mask.extend([segment.assistant] * len(piece))
        return ChatIds(ids, mask)

    def __repr__(self) -> str:
        return f"HcxTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def load(path: str | Path, chat: ChatTokens | None = None) -> Tokenizer:
    """A tokenizer directory (or its ``tokenizer.json``): one written by ``hcx tokenizer train`` gives
    :class:`HcxTokenizer`; any other Hugging Face tokenizer gives
    :class:`~hcx.tokenizer.hf_tokenizer.HfTokenizer`, with ``chat`` overriding its chat settings."""
    try:
        tokenizer = HcxTokenizer(path)
    except NotHcxTokenizer:
        from hcx.tokenizer.hf_tokenizer import HfTokenizer

        return HfTokenizer(path, chat)
    if chat is not None and chat.model_dump(exclude_none=True):
        raise ValueError(
            f"{tokenizer.path}: chat overrides apply to Hugging Face tokenizers; the hcx tokenizer "
            "has its own chat format (remove the chat: settings)"
        )
    return tokenizer
