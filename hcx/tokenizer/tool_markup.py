"""The text markup of tool use in the hcx chat format (special tokens cannot grow, so it is plain text).

- tool definitions: :func:`tools_text`, a block added to the system turn;
- an assistant's calls: :func:`calls_text`, ``<tool_call>{"name":…,"arguments":{…}}</tool_call>`` per call,
  written right after the reply's content with nothing in between;
- a tool's result: :func:`tool_response_text`, ``<tool_response>…</tool_response>`` in a user turn.

All JSON is compact (no spaces, ``ensure_ascii=False``), the form the tool-call grammar forces at
inference. Each piece has its Jinja twin here (``*_JINJA``) so that ``CHAT_TEMPLATE`` renders the same
text. Jinja cannot parse JSON: an ``arguments`` string is written as given there, while hcx rewrites it
compact, so the two agree for compact strings and for ``arguments`` given as objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
TOOL_RESPONSE_OPEN = "<tool_response>"
TOOL_RESPONSE_CLOSE = "</tool_response>"
TOOLS_OPEN = "<tools>"
TOOLS_CLOSE = "</tools>"
TOOLS_INSTRUCTION = (
    "You can call the functions listed below, one JSON object per line. To call one, write "
    f'{TOOL_CALL_OPEN}{{"name":<function name>,"arguments":<JSON object>}}{TOOL_CALL_CLOSE}; '
    f"each result comes back as {TOOL_RESPONSE_OPEN}...{TOOL_RESPONSE_CLOSE}."
)
SYSTEM_SEPARATOR = "\n\n"
"""Between a system message's own text and the tools block."""


class MarkupError(ValueError):
    """A tool definition or call that cannot be rendered; the message names the field."""


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def json_string(text: str) -> str:
    """``text`` as a JSON string literal, which is also a valid Jinja and Lark string literal."""
    return json.dumps(text, ensure_ascii=False)


def _named_function(entry: Any, where: str, shape: str, default_type: str | None = None) -> Mapping[str, Any]:
    """The ``function`` of ``{'type': 'function', 'function': {'name', ...}}`` (a tool or a call)."""
    if not isinstance(entry, Mapping) or entry.get("type", default_type) != "function":
        raise MarkupError(f"{where} must be {shape}")
    function = entry.get("function")
    if not isinstance(function, Mapping):
        raise MarkupError(f"{where}.function must be an object")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise MarkupError(f"{where}.function.name must be a non-empty string")
    return function


def tool_function(tool: Any, where: str) -> Mapping[str, Any]:
    return _named_function(tool, where, "{'type': 'function', 'function': {...}}")


def tools_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The block listing the functions (OpenAI ``tools`` shape), one compact JSON object per line."""
    if not isinstance(tools, Sequence) or isinstance(tools, str):
        raise MarkupError("tools must be a list of {'type': 'function', 'function': {...}}")
    lines = []
    for i, tool in enumerate(tools):
        function = tool_function(tool, f"tools[{i}]")
        try:
            lines.append(compact_json(function))
        except (TypeError, ValueError) as exc:
            raise MarkupError(f"tools[{i}].function is not JSON ({exc})") from None
    return "\n".join([TOOLS_INSTRUCTION, TOOLS_OPEN, *lines, TOOLS_CLOSE])


def arguments_json(arguments: Any, where: str) -> str:
    """Compact JSON of a call's arguments: an object, or a string holding one (the OpenAI shape)."""
    value = arguments
    if isinstance(arguments, str):
        try:
            value = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise MarkupError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise MarkupError(f"{where} must be a JSON object string, got {arguments!r:.60}")
    try:
        return compact_json(value)
    except (TypeError, ValueError) as exc:
        raise MarkupError(f"{where} is not JSON ({exc})") from None


CALL_TAIL = "}" + TOOL_CALL_CLOSE
"""What closes a call after its arguments object."""


def call_head(name: str) -> str:
    """What opens a call of ``name``, up to its arguments object."""
    return f'{TOOL_CALL_OPEN}{{"name":{json_string(name)},"arguments":'


def call_text(name: str, arguments: str) -> str:
    """One call; ``arguments`` is already compact JSON of an object."""
    return call_head(name) + arguments + CALL_TAIL


def calls_text(tool_calls: Any) -> str:
    """An assistant message's ``tool_calls`` (OpenAI shape) as markup, in order."""
    if not isinstance(tool_calls, Sequence) or isinstance(tool_calls, str):
        raise MarkupError("tool_calls must be a list")
    out = []
    for j, call in enumerate(tool_calls):
        where = f"tool_calls[{j}]"
        shape = "{'type': 'function', 'function': {'name', 'arguments'}}"
        function = _named_function(call, where, shape, default_type="function")
        arguments = arguments_json(function.get("arguments"), f"{where}.function.arguments")
        out.append(call_text(function["name"], arguments))
    return "".join(out)


def tool_response_text(content: str) -> str:
    return f"{TOOL_RESPONSE_OPEN}{content}{TOOL_RESPONSE_CLOSE}"


_COMPACT = "tojson(separators=(',', ':'))"

TOOLS_JINJA = (
    "{%- macro hcx_tools() -%}"
    + f"{{{{ {json_string(TOOLS_INSTRUCTION + chr(10) + TOOLS_OPEN)} }}}}"
    + "{%- for tool in tools -%}"
    + f"{{{{ '\\n' + (tool['function'] | {_COMPACT}) }}}}"
    + "{%- endfor -%}"
    + f"{{{{ {json_string(chr(10) + TOOLS_CLOSE)} }}}}"
    + "{%- endmacro -%}"
)
"""Defines ``hcx_tools()``, the Jinja of :func:`tools_text`."""

_CALL_HEAD = json_string(TOOL_CALL_OPEN + '{"name":')
CALLS_JINJA = (
    "{%- for call in message['tool_calls'] or [] -%}"
    + f"{{{{ {_CALL_HEAD} + (call['function']['name'] | tojson) + ',\"arguments\":' }}}}"
    + "{%- if call['function']['arguments'] is string -%}{{ call['function']['arguments'] }}"
    + f"{{%- else -%}}{{{{ call['function']['arguments'] | {_COMPACT} }}}}{{%- endif -%}}"
    + f"{{{{ {json_string(CALL_TAIL)} }}}}"
    + "{%- endfor -%}"
)
"""The Jinja of :func:`calls_text` for ``message``."""

TOOL_RESPONSE_JINJA = (
    f"{{{{ {json_string(TOOL_RESPONSE_OPEN)} + message['content'] + {json_string(TOOL_RESPONSE_CLOSE)} }}}}"
)
