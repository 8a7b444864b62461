"""A model's own Hugging Face tokenizer (``tokenizer.json``, ``tokenizer_config.json``) as a Tokenizer.

Text encodes with ``tokenizers`` without added special tokens, and special-token strings in it
stay text (``encode_special_tokens``), as on the hcx tokenizer.

A chat is the template's rendering (:mod:`hcx.tokenizer.chat_template`) tokenized as
``tokenizers`` tokenizes that whole text, except that special tokens are only recognised
outside the message contents: the text between special tokens is encoded run by run, and a
run that does not start the text is encoded as ``tokenizers`` encodes a piece after a special
token (a Metaspace ``prepend_scheme: first`` prepends nothing there).

Templates rarely mark what the assistant says, so the mask is derived: the reply to message
``i`` starts where the rendering of ``messages[:i]`` with the generation prompt ends, and
ends with the last end-of-turn token inside the rendering of ``messages[:i + 1]``. Both must
be prefixes of the whole rendering (a template that rewrites earlier turns is refused), and
the generation prompt must tokenize to exactly the conversation's first ids, so the prompt
the model gets at inference is the prefix it was trained on.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as RustTokenizer

from hcx.tokenizer.chat import ChatFormatError, conversation_messages
from hcx.tokenizer.chat_template import render_chat
from hcx.tokenizer.config import ChatTokens
from hcx.tokenizer.hf_files import TOKENIZER_FILE
from hcx.tokenizer.hf_settings import read_chat_tokens, read_config, save_chat_tokens, with_overrides
from hcx.tokenizer.protocol import ChatIds, Conversation, Tokenizer
from hcx.tokenizer.tokenizer import TokenizerFormatError

EOS_NAMES = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")
PROBE = ({"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"})
Tools = Sequence[Mapping[str, Any]]


def _never_prepend(node: Any) -> bool:
    """Turn every Metaspace ``prepend_scheme: first`` under ``node`` into ``never``; True if any."""
    changed = False
    if isinstance(node, dict):
        if node.get("type") == "Metaspace" and node.get("prepend_scheme") == "first":
            node["prepend_scheme"] = "never"
            changed = True
        for child in node.get("pretokenizers", []):
            changed |= _never_prepend(child)
    return changed


def _leading_special(processor: Any) -> str | None:
    """The special token a ``TemplateProcessing`` puts before a single sequence (the BOS)."""
    if not isinstance(processor, dict):
        return None
    if processor.get("type") == "Sequence":
        return next(filter(None, map(_leading_special, processor.get("processors", []))), None)
    single = processor.get("single") if processor.get("type") == "TemplateProcessing" else None
    if single and "SpecialToken" in single[0]:
        return single[0]["SpecialToken"]["id"]
    return None


def _text_encoder(spec: dict[str, Any]) -> RustTokenizer:
    tokenizer = RustTokenizer.from_str(json.dumps(spec))
    tokenizer.encode_special_tokens = True
    return tokenizer


@dataclass
class _Encoded:
    """Ids of a rendered chat with each id's character span, and the text runs between special tokens."""

    ids: list[int] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, index of first id)


class HfTokenizer:
    """A model's own tokenizer; see the module docstring and :func:`hcx.tokenizer.load`."""

    def __init__(self, path: str | Path, chat: ChatTokens | None = None) -> None:
        path = Path(path)
        self.path = path / TOKENIZER_FILE if path.is_dir() else path
        if not self.path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {self.path}")
        self._overrides = chat
        self._build(self.path.read_text(encoding="utf-8"), read_config(self.path.parent))

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "overrides": self._overrides, "spec": self._spec, "config": self._config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self._overrides = state["path"], state["overrides"]
        self._build(state["spec"], state["config"])

    def _build(self, spec_text: str, config: dict[str, Any]) -> None:
        self._spec, self._config = spec_text, config
        try:
            spec = json.loads(spec_text)
            self._text = _text_encoder(spec)
        except Exception as exc:  # tokenizers raises plain Exceptions for malformed files
            raise TokenizerFormatError(
                f"{self.path}: not a tokenizer.json that `tokenizers` loads ({exc})"
            ) from None
        inner = copy.deepcopy(spec)
        self._inner = _text_encoder(inner) if _never_prepend(inner.get("pre_tokenizer")) else self._text
        added = self._text.get_added_tokens_decoder()
        self._specials = {t.content: i for i, t in sorted(added.items()) if t.special}
        self._strip = {t.content: (t.lstrip, t.rstrip) for t in added.values() if t.special}
        by_length = sorted(self._specials, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, by_length))) if by_length else None
        self._vocab_size = max(self._text.get_vocab(with_added_tokens=True).values()) + 1
        self._resolve(with_overrides(read_chat_tokens(self.path.parent, config), self._overrides), spec)

    def _resolve(self, declared: ChatTokens, spec: dict[str, Any]) -> None:
        """Fill what the directory and the overrides leave open: eos from the usual names, bos from
        the post-processor (else eos), pad from eos, end-of-turn from what the template puts after a reply."""
        eos = declared.eos or next((t for t in EOS_NAMES if t in self._specials), None)
        if eos is None:
            raise TokenizerFormatError(
                f"{self.path}: no eos_token in {self.path.parent / 'tokenizer_config.json'} and none of "
                f"{list(EOS_NAMES)} is a special token; set chat.eos"
            )
        unk = spec.get("model", {}).get("unk_token")
        self._template_tokens = {
            f"{name}_token": value
            for name, value in (("bos", declared.bos), ("eos", eos), ("pad", declared.pad), ("unk", unk))
            if value is not None
        }
        leading = _leading_special(spec.get("post_processor"))
        self._adds_bos = leading is not None
        settings = declared.model_copy(update={"eos": eos, "bos": declared.bos or leading or eos})
        settings.pad = settings.pad or eos
        if settings.end_of_turn is None:
            settings.end_of_turn = (
                self._template_end_of_turn(settings.template) if settings.template else None
            ) or eos
        self.chat_tokens = settings
        self._ids = {
            name: self._id_of(name, getattr(settings, name)) for name in ("eos", "bos", "pad", "end_of_turn")
        }

    def _id_of(self, name: str, token: str) -> int:
        found = self._text.token_to_id(token)
        if found is None:
            raise TokenizerFormatError(f"{self.path}: chat {name} {token!r} is not a token of this tokenizer")
        return found

    def _template_end_of_turn(self, template: str) -> str | None:
        try:
            prompt = render_chat(template, PROBE[:1], True, self._template_tokens)
            whole = render_chat(template, PROBE, False, self._template_tokens)
        except ChatFormatError:
            return None
        reply = whole[len(prompt) :] if whole.startswith(prompt) else ""
        after = reply.find(PROBE[1]["content"])
        found = self._special_re.search(reply, after) if self._special_re and after >= 0 else None
        return found.group() if found else None

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    def token_id(self, special: str) -> int:
        try:
            return self._specials[special]
        except KeyError:
            raise KeyError(f"{special!r} is not a special token of {self.path}") from None

    @property
    def eot_id(self) -> int:
        return self._ids["eos"]

    @property
    def bos_id(self) -> int:
        return self._ids["bos"]

    @property
    def adds_bos(self) -> bool:
        return self._adds_bos

    @property
    def end_of_turn_id(self) -> int:
        return self._ids["end_of_turn"]

    @property
    def pad_id(self) -> int:
        return self._ids["pad"]

    def encode(self, text: str) -> list[int]:
        return self._text.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], num_threads: int = 8) -> list[list[int]]:
        """``tokenizers`` spreads the batch over its own threads (``num_threads`` is the hcx knob)."""
        return [e.ids for e in self._text.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._text.decode(list(ids), skip_special_tokens=False)

    def decode_bytes(self, ids: Sequence[int]) -> bytes:
        """UTF-8 of :meth:`decode` (a character cut between tokens is U+FFFD there, not its bytes)."""
        return self.decode(ids).encode("utf-8")

    def render_chat(
        self, conversation: Conversation, add_generation_prompt: bool = False, tools: Tools | None = None
    ) -> str:
        if not self.chat_tokens.template:
            raise ChatFormatError(
                f"{self.path.parent}: no chat template (chat_template in tokenizer_config.json); "
                "set chat.template"
            )
        messages = conversation_messages(conversation)
        return render_chat(
            self.chat_tokens.template, messages, add_generation_prompt, self._template_tokens, tools
        )

    def encode_chat(
        self, conversation: Conversation, add_generation_prompt: bool = False, tools: Tools | None = None
    ) -> ChatIds:
        """The template's ids; the mask is derived for complete conversations (a generation
        prompt, which nothing trains on, gets an all-False mask). ``tools`` and messages with
        ``tool_calls`` or the ``tool`` role are the template's to render; a reply's tool calls are
        trained like its text."""
        messages = conversation_messages(conversation)
        text = self.render_chat(messages, add_generation_prompt, tools)
        encoded = self._encode_rendered(text, self._content_spans(messages, text, tools))
        mask = [False] * len(encoded.ids)
        if not add_generation_prompt:
            for start, end in self._reply_spans(messages, text, encoded, tools):
                for k, (a, b) in enumerate(encoded.spans):
                    mask[k] = mask[k] or (a >= start and b <= end)
        return ChatIds(encoded.ids, mask)

    def _prefix_length(
        self, text: str, messages: Sequence[Mapping[str, Any]], generation: bool, tools: Tools | None
    ) -> int | None:
        try:
            head = self.render_chat(messages, generation, tools)
        except ChatFormatError:
            return None
        return len(head) if text.startswith(head) else None

    def _content_spans(
        self, messages: list[Mapping[str, Any]], text: str, tools: Tools | None
    ) -> list[tuple[int, int]]:
        """Where each message's content lies in ``text``, searched in order; only needed (and only
        computed) when some content holds a special-token string that must stay text."""
        pattern = self._special_re
        contents = [m.get("content") if isinstance(m, Mapping) else None for m in messages]
        if pattern is None or not any(isinstance(c, str) and pattern.search(c) for c in contents):
            return []
        spans: list[tuple[int, int]] = []
        cursor = 0
        for j, content in enumerate(contents):
            if not isinstance(content, str) or not content:
                continue
            lower = self._prefix_length(text, messages[:j], False, tools) or 0
            at = text.find(content, max(cursor, lower))
            if at < 0:
                if found := pattern.search(content):
                    raise ChatFormatError(
                        f"message {j} holds the special-token text {found.group()!r} and the chat template "
                        "changes its content, so it cannot be kept as ordinary text"
                    )
                continue
            spans.append((at, at + len(content)))
            cursor = at + len(content)
        return spans

    def _specials_in(self, text: str, protected: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """(start, end, id) of the special tokens of ``text`` outside the protected spans."""
        if self._special_re is None:
            return []
        bounds = [0, *(x for span in protected for x in span), len(text)]
        found: list[tuple[int, int, int]] = []
        for lo, hi in zip(bounds[::2], bounds[1::2], strict=True):
            for match in self._special_re.finditer(text, lo, hi):
                start, end = match.span()
                lstrip, rstrip = self._strip[match.group()]
                floor = found[-1][1] if found else 0
                if start < floor:
                    continue
                while lstrip and start > floor and text[start - 1].isspace():
                    start -= 1
                while rstrip and end < hi and text[end].isspace():
                    end += 1
                found.append((start, end, self._specials[match.group()]))
        return found

    def _encode_run(self, text: str, start: int, end: int) -> tuple[list[int], list[tuple[int, int]]]:
        encoder = self._text if start == 0 else self._inner
        encoding = encoder.encode(text[start:end], add_special_tokens=False)
        return encoding.ids, [(a + start, b + start) for a, b in encoding.offsets]

    def _encode_rendered(self, text: str, protected: list[tuple[int, int]]) -> _Encoded:
        out, cursor = _Encoded(), 0
        for start, end, special in [*self._specials_in(text, protected), (len(text), len(text), -1)]:
            if start > cursor:
                ids, spans = self._encode_run(text, cursor, start)
                out.runs.append((cursor, start, len(out.ids)))
                out.ids += ids
                out.spans += spans
            if special >= 0:
                out.ids.append(special)
                out.spans.append((start, end))
            cursor = end
        return out

    def _check_prompt_boundary(self, text: str, encoded: _Encoded, at: int, index: int) -> None:
        """The generation prompt ``text[:at]`` must tokenize to the conversation's first ids, the
        rest of the conversation's ids starting at or after ``at``."""
        for start, end, first in encoded.runs:
            if start < at < end:
                ids, _ = self._encode_run(text, start, at)
                after = first + len(ids)
                next_start = encoded.spans[after][0] if after < len(encoded.spans) else at
                if ids != encoded.ids[first:after] or next_start < at:
                    raise ChatFormatError(
                        f"message {index}: the generation prompt ends inside a token "
                        f"({text[max(0, at - 20) : at]!r} | {text[at : at + 20]!r}), so a prompt would not "
                        "tokenize as in training; use a chat template whose generation prompt ends at a "
                        "token boundary (chat.template)"
                    )

    def _reply_spans(
        self, messages: list[Mapping[str, Any]], text: str, encoded: _Encoded, tools: Tools | None
    ) -> list[tuple[int, int]]:
        """Character spans of each assistant reply: from the end of its generation prompt to the end
        of the end-of-turn token that closes it."""
        closers = [
            (a, b) for (a, b), i in zip(encoded.spans, encoded.ids, strict=True) if i == self.end_of_turn_id
        ]
        replies = []
        for index, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            start = self._prefix_length(text, messages[:index], True, tools)
            stop = self._prefix_length(text, messages[: index + 1], False, tools)
            if start is None or stop is None:
                raise ChatFormatError(
                    f"message {index}: the chat template does not render the conversation up to this reply "
                    "as the start of the whole conversation (it rewrites earlier turns), so the assistant "
                    "tokens cannot be told apart; use a template that only appends (chat.template)"
                )
            ends = [b for a, b in closers if a >= start and b <= stop]
            if not ends:
                token = self.chat_tokens.end_of_turn
                raise ChatFormatError(
                    f"message {index}: the chat template does not close the assistant reply with {token!r}; "
                    "set chat.end_of_turn to the token it uses"
                )
            self._check_prompt_boundary(text, encoded, start, index)
            replies.append((start, ends[-1]))
        return replies

    def __repr__(self) -> str:
        return f"HfTokenizer({str(self.path)!r}, vocab_size={self.vocab_size})"


def keep_chat_tokens(tokenizer: Tokenizer, directory: str | Path) -> None:
    """Write a Hugging Face tokenizer's chat settings in effect (overrides included) into an export's
    ``tokenizer_config.json``, so the next stage loading it gets them; the hcx tokenizer's are fixed."""
    if isinstance(tokenizer, HfTokenizer):
        save_chat_tokens(directory, tokenizer.chat_tokens)
