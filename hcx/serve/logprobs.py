"""Token log-probabilities in the OpenAI response shapes.

Chat completions list each generated token with its bytes and its most likely
alternatives; text completions give parallel lists (``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``), where, with ``echo``, the prompt's tokens come first (a
token-id prompt's first token has no log-probability: ``null``). A token that ends inside a UTF-8
character (byte-level BPE splits a Hangul syllable's 3 bytes) has no text of its own: its
``token`` shows U+FFFD and ``bytes`` (chat) holds the exact bytes. A text completion's
``top_logprobs`` maps token text to log-probability, with the chosen token included as
vLLM does, so a client can tell whether it was the most likely one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hcx.infer.request import TokenLogprob, TopLogprobs
from hcx.tokenizer import Tokenizer


class TokenTexts:
    """Each token's bytes and text, decoded once per id."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._bytes: dict[int, bytes] = {}

    def bytes_of(self, token_id: int) -> bytes:
        found = self._bytes.get(token_id)
        if found is None:
            found = self._bytes[token_id] = self.tokenizer.decode_bytes([token_id])
        return found

    def text(self, token_id: int) -> str:
        return self.bytes_of(token_id).decode("utf-8", errors="replace")


def chat_logprobs(
    texts: TokenTexts, token_ids: Sequence[int], logprobs: Sequence[float], tops: Sequence[TopLogprobs]
) -> list[dict[str, Any]]:
    """The ``logprobs.content`` entries of a chat choice (or of one streamed chunk)."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        return {"token": texts.text(token_id), "logprob": logprob, "bytes": list(texts.bytes_of(token_id))}

    tops = tops or [()] * len(token_ids)
    return [
        {**entry(t, lp), "top_logprobs": [entry(a, alp) for a, alp in top]}
        for t, lp, top in zip(token_ids, logprobs, tops, strict=True)
    ]


def completion_logprobs(
    texts: TokenTexts,
    entries: Sequence[TokenLogprob | int],
    text_offset: int = 0,
) -> dict[str, list]:
    """The ``logprobs`` object of a text choice; an int entry is a token without a log-probability
    (the echoed prompt's first token)."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for item in entries:
        token_id = item if isinstance(item, int) else item.token_id
        token = texts.text(token_id)
        tokens.append(token)
        offsets.append(text_offset)
        text_offset += len(token)
        if isinstance(item, int):
            token_logprobs.append(None)
            top_logprobs.append(None)
        else:
            token_logprobs.append(item.logprob)
            top = {texts.text(a): lp for a, lp in item.top}
            top.setdefault(token, item.logprob)
            top_logprobs.append(top)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }
