"""Structured output: grammars the generated tokens must follow, through llguidance.

A request's grammar (JSON Schema, any JSON object, a Lark grammar) becomes an
``llguidance`` matcher over the tokenizer's vocabulary. Each step the matcher gives the
request a bitmask of the tokens that keep the output inside the grammar; the sampler
chooses only among those (:mod:`hcx.infer.logits`), so constrained and free requests share
the batch. Once the grammar is complete, only the end tokens (end-of-turn, end-of-text)
remain allowed, and the request stops as it normally would.

JSON is compiled compact, without free whitespace between tokens (``whitespace_flexible`` off,
``,`` and ``:`` as separators — llguidance's defaults, spelled out because tool calls rely on
the same form): a model cannot then pad the output with blank lines until it runs out of tokens.
"""

from __future__ import annotations

import json
from typing import Any

import llguidance
import llguidance.numpy
import torch
from torch import Tensor

from hcx.tokenizer import Tokenizer

JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
_BITS = torch.arange(32, dtype=torch.int32)


def json_grammar(schema: dict[str, Any] | None = None) -> str:
    """A grammar for JSON matching ``schema``; without one, any JSON object (OpenAI's JSON mode)."""
    return llguidance.LLMatcher.grammar_from_json_schema(
        schema if schema is not None else {"type": "object"}, defaults=JSON_OPTIONS
    )


def lark_grammar(source: str) -> str:
    return llguidance.LLMatcher.grammar_from_lark(source)


class GrammarError(ValueError):
    """A grammar llguidance refuses; the message is llguidance's."""


class Grammars:
    """Compiles grammars for one tokenizer (the token table is built once, on first use)."""

    def __init__(self, tokenizer: Tokenizer, end_ids: list[int]):
        self.tokenizer = tokenizer
        self.end_ids = end_ids
        self._table: llguidance.LLTokenizer | None = None

    @property
    def table(self) -> llguidance.LLTokenizer:
        if self._table is None:
            self._table = llguidance.LLTokenizer(
                self.tokenizer.path.read_text(encoding="utf-8"),
                n_vocab=self.tokenizer.vocab_size,
                eos_token=self.end_ids,
            )
        return self._table

    def matcher(self, grammar: str) -> GrammarMatcher:
        """A fresh matcher; :class:`GrammarError` if llguidance refuses the grammar."""
        try:
            matcher = llguidance.LLMatcher(self.table, grammar)
        except (ValueError, RuntimeError, TypeError) as error:
            raise GrammarError(_short(str(error))) from None
        return GrammarMatcher(matcher, self.table.vocab_size)


class GrammarMatcher:
    """One request's position in its grammar."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        if matcher.is_error():
            raise GrammarError(_short(matcher.get_error()))
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.mask = llguidance.numpy.allocate_token_bitmask(1, vocab_size)

    def restrict(self, logits: Tensor) -> None:
        """Set the logits (1-D) of tokens the grammar forbids next to -inf, in place.

        (``llguidance.torch`` would do this with a ``torch.compile``d kernel, which compiles on
        first use; unpacking the 32-bit words here costs microseconds.)
        """
        llguidance.numpy.fill_next_token_bitmask(self.matcher, self.mask, 0)
        words = torch.from_numpy(self.mask[0]).to(logits.device)
        allowed = ((words[:, None] >> _BITS.to(logits.device)) & 1).flatten().bool()[: self.vocab_size]
        width = min(self.vocab_size, logits.shape[-1])
        logits[:width].masked_fill_(~allowed[:width], float("-inf"))
        logits[width:] = float("-inf")

    def advance(self, token: int) -> None:
        if not self.matcher.is_stopped() and not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} broke the grammar: {_short(self.matcher.get_error())}")


def _short(message: str) -> str:
    """llguidance's first line: its messages can carry the whole grammar."""
    return message.strip().splitlines()[0] if message.strip() else "invalid grammar"


def schema_of(response_format_schema: Any) -> dict[str, Any]:
    """A JSON schema given as an object or a JSON string, as a dict (clients send both)."""
    if isinstance(response_format_schema, str):
        response_format_schema = json.loads(response_format_schema)
    if not isinstance(response_format_schema, dict):
        raise GrammarError("a JSON schema must be an object")
    return response_format_schema
