"""Rendering a Hugging Face chat template (Jinja) to text the way ``transformers`` does.

Same sandboxed environment and helpers as ``apply_chat_template`` (``trim_blocks``,
``lstrip_blocks``, ``loopcontrols``, ``raise_exception``, ``strftime_now``, a ``tojson`` that
does not escape HTML, ``{% generation %}`` blocks rendered as their body), so a template renders
the same text here as in ``transformers``. Turning the text into ids is
:mod:`hcx.tokenizer.hf_tokenizer`'s job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

import jinja2
import jinja2.meta
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from hcx.tokenizer.chat import ChatFormatError


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant tracking) renders its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False
):
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


@lru_cache(maxsize=32)
def compile_template(source: str) -> jinja2.Template:
    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatFormatError(f"the chat template is not valid Jinja: {exc} (line {exc.lineno})") from None


@lru_cache(maxsize=32)
def template_reads(source: str, name: str) -> bool:
    """Whether the template reads the variable ``name`` (``tools``: whether it can show tools at all)."""
    compile_template(source)
    return name in jinja2.meta.find_undeclared_variables(_environment().parse(source))


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    add_generation_prompt: bool,
    tokens: Mapping[str, str | None],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> str:
    """The template's text for ``messages``; ``tokens`` gives ``bos_token``, ``eos_token`` & co.

    ``tools`` are passed as ``transformers`` passes JSON-schema tools; a template that never reads
    ``tools`` is refused rather than silently dropping them."""
    if tools and not template_reads(template, "tools"):
        raise ChatFormatError("the chat template does not render tools (it never reads `tools`)")
    try:
        return compile_template(template).render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            tools=list(tools) if tools is not None else None,
            documents=None,
            **tokens,
        )
    except jinja2.TemplateError as exc:
        raise ChatFormatError(f"the chat template refused the conversation: {exc}") from None
