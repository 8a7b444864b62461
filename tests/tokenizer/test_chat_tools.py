"""Tools, tool calls and tool results in the chat format: hcx's markup, CHAT_TEMPLATE, Hugging Face templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from transformers import AutoTokenizer

from hcx.tokenizer import ChatTokens, load
from hcx.tokenizer.chat import ChatFormatError, chat_segments
from hcx.tokenizer.specials import ASSISTANT, END_OF_TURN, SPECIAL_TOKENS, SYSTEM, USER
from hcx.tokenizer.tool_markup import TOOLS_INSTRUCTION
from tests.tool_specs import TOOLS, WEATHER


def call(name: str, arguments: str | dict, call_id: str = "call_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def conversation(arguments: str | dict = '{"city":"서울"}', system: bool = True) -> list[dict]:
    messages = [
        {"role": "user", "content": "서울 날씨랑 지금 몇 시야?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [call("get_weather", arguments), call("now", {})],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "맑음, 21°C"},
        {"role": "tool", "tool_call_id": "call_2", "name": "now", "content": "12:30"},
        {"role": "assistant", "content": "서울은 맑고 21도, 지금은 12시 30분이에요."},
        {"role": "user", "content": "내일은?"},
        {
            "role": "assistant",
            "content": "확인해 볼게요.",
            "tool_calls": [call("get_weather", {"city": "서울", "days": 1})],
        },
    ]
    return [{"role": "system", "content": "짧게 답하세요."}, *messages] if system else messages


TOOLS_BLOCK = (
    f"{TOOLS_INSTRUCTION}\n<tools>\n"
    '{"name":"get_weather","description":"오늘의 날씨를 알려줍니다 (\\"섭씨\\")","parameters":{"type":"object",'
    '"properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}\n'
    '{"name":"now","description":"현재 시각"}\n</tools>'
)
FIRST_CALLS = (
    '<tool_call>{"name":"get_weather","arguments":{"city":"서울"}}</tool_call>'
    '<tool_call>{"name":"now","arguments":{}}</tool_call>'
)
LAST_REPLY = (
    '확인해 볼게요.<tool_call>{"name":"get_weather","arguments":{"city":"서울","days":1}}</tool_call>'
)


def rendered(messages: list[dict], tools: list[dict] | None, generation: bool = False) -> str:
    return "".join(s.text for s in chat_segments(messages, generation, tools))


def test_markup_layout_and_what_is_trained(tok):
    # Arguments given as a spaced JSON string are written compact, as the tool-call grammar forces them.
    messages = conversation(arguments='{"city": "서울"}')
    chat = tok.encode_chat(messages, tools=TOOLS)
    assert tok.decode(chat.ids) == (
        f"{SYSTEM}짧게 답하세요.\n\n{TOOLS_BLOCK}{END_OF_TURN}{USER}서울 날씨랑 지금 몇 시야?{END_OF_TURN}"
        f"{ASSISTANT}{FIRST_CALLS}{END_OF_TURN}"
        f"{USER}<tool_response>맑음, 21°C</tool_response>{END_OF_TURN}"
        f"{USER}<tool_response>12:30</tool_response>{END_OF_TURN}"
        f"{ASSISTANT}서울은 맑고 21도, 지금은 12시 30분이에요.{END_OF_TURN}"
        f"{USER}내일은?{END_OF_TURN}{ASSISTANT}{LAST_REPLY}{END_OF_TURN}"
    )
    specials = [i for i in chat.ids if i < len(SPECIAL_TOKENS)]
    roles = [SYSTEM, USER, ASSISTANT, USER, USER, ASSISTANT, USER, ASSISTANT]
    assert specials == [tok.token_id(t) for role in roles for t in (role, END_OF_TURN)]
    trained = [i for i, m in zip(chat.ids, chat.assistant_mask, strict=True) if m]
    assert tok.decode(trained) == (
        f"{FIRST_CALLS}{END_OF_TURN}서울은 맑고 21도, 지금은 12시 30분이에요.{END_OF_TURN}{LAST_REPLY}{END_OF_TURN}"
    )
    prompt = tok.encode_chat(messages[:5], add_generation_prompt=True, tools=TOOLS)
    assert chat.ids[: len(prompt.ids)] == prompt.ids


def test_tools_get_a_system_turn_when_there_is_none(tok):
    messages = conversation(system=False)
    assert rendered(messages, TOOLS).startswith(f"{SYSTEM}{TOOLS_BLOCK}{END_OF_TURN}{USER}서울")
    empty_system = [{"role": "system", "content": ""}, *messages]
    assert rendered(empty_system, TOOLS) == rendered(messages, TOOLS)
    later_system = [*messages[:1], {"role": "system", "content": "x"}, *messages[1:]]
    assert rendered(later_system, TOOLS).count(TOOLS_INSTRUCTION) == 1
    assert rendered(later_system, TOOLS).startswith(f"{SYSTEM}{TOOLS_BLOCK}{END_OF_TURN}")


def test_conversations_without_tools_are_unchanged(tok):
    plain = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    expected = f"{SYSTEM}s{END_OF_TURN}{USER}u{END_OF_TURN}{ASSISTANT}a{END_OF_TURN}{ASSISTANT}"
    for tools in (None, []):
        assert rendered(plain, tools, generation=True) == expected
        assert tok.encode_chat(plain, True, tools) == tok.encode_chat(plain, True)
    # tool_calls that are empty or null are no calls
    assert rendered([*plain[:2], {**plain[2], "tool_calls": []}], None) == rendered(plain, None)
    assert rendered([*plain[:2], {**plain[2], "tool_calls": None}], None) == rendered(plain, None)


@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("tools", [TOOLS, None])
def test_chat_template_in_transformers_renders_the_same(tok, tokenizer_dir: Path, system: bool, tools):
    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    messages = conversation(system=system)
    text = auto.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
    assert text == rendered(messages, tools, generation=True)
    ours = tok.encode_chat(messages, add_generation_prompt=True, tools=tools)
    assert auto(text, add_special_tokens=False)["input_ids"] == ours.ids
    whole = tok.encode_chat(messages, tools=tools)
    out = auto.apply_chat_template(
        messages, tools=tools, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert out["input_ids"] == whole.ids
    assert [bool(m) for m in out["assistant_masks"]] == whole.assistant_mask


def _with(index: int, **fields) -> list[dict]:
    messages = conversation()
    messages[index] = {**messages[index], **fields}
    return messages


@pytest.mark.parametrize(
    ("messages", "tools", "error"),
    [
        (_with(3, content=None), None, r"message 3: content must be a string, got NoneType"),
        (_with(3, content=["a"]), None, r"message 3: content must be a string, got list"),
        (_with(2, tool_calls=["get_weather"]), None, r"message 2: tool_calls\[0\] must be"),
        (_with(2, tool_calls={"function": {}}), None, r"message 2: tool_calls must be a list"),
        (_with(2, tool_calls=[{"function": {"arguments": "{}"}}]), None, r"tool_calls\[0\]\.function\.name"),
        (
            _with(2, tool_calls=[call("f", "{'a': 1}")]),
            None,
            r"message 2: tool_calls\[0\]\.function\.arguments",
        ),
        (_with(2, tool_calls=[call("f", "[1, 2]")]), None, r"arguments must be a JSON object string"),
        (_with(2, tool_calls=[call("f", None)]), None, r"arguments must be a JSON object string"),
        (_with(2, tool_calls=[{**call("f", "{}"), "type": "code"}]), None, r"message 2: tool_calls\[0\]"),
        (_with(2, content=7), None, r"message 2: content must be a string, got int"),
        (
            _with(1, tool_calls=[call("f", "{}")]),
            None,
            r"message 1: tool_calls are only allowed on assistant",
        ),
        (conversation(), [{"name": "f"}], r"tools\[0\] must be"),
        (
            conversation(),
            [WEATHER, {"type": "function", "function": {"name": ""}}],
            r"tools\[1\]\.function\.name",
        ),
        (conversation(), "get_weather", r"tools must be a list"),
        (
            _with(0, role="function"),
            None,
            r"message 0: role must be one of \['assistant', 'system', 'tool', 'user'\]",
        ),
    ],
)
def test_malformed_tool_messages_name_the_message_and_field(tok, messages, tools, error: str):
    with pytest.raises(ChatFormatError, match=error):
        tok.encode_chat(messages, tools=tools)


# A Hermes/Qwen-style ChatML template: tools in the system turn, calls after the content, and
# consecutive tool results grouped into one user turn (so a conversation cut between two results is
# not a prefix of the whole one; the mask only needs the cuts before and after each reply).
HERMES_TEMPLATE = (
    "{%- if tools -%}{{- '<|im_start|>system\\n' -}}"
    "{%- if messages[0]['role'] == 'system' -%}{{- messages[0]['content'] + '\\n\\n' -}}{%- endif -%}"
    "{{- '# Tools\\n<tools>' -}}{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
    "{{- '\\n</tools><|im_end|>\\n' -}}"
    "{%- elif messages[0]['role'] == 'system' -%}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' and loop.first -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' + (message['content'] or '') -}}"
    "{%- for call in message['tool_calls'] or [] -%}"
    "{{- '\\n<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' -}}"
    "{%- if call['function']['arguments'] is string -%}{{- call['function']['arguments'] -}}"
    "{%- else -%}{{- call['function']['arguments'] | tojson -}}{%- endif -%}"
    "{{- '}\\n</tool_call>' -}}{%- endfor -%}{{- '<|im_end|>\\n' -}}"
    "{%- elif message['role'] == 'tool' -%}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}{{- '<|im_start|>user' -}}{%- endif -%}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' -}}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- else -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def test_hugging_face_template_renders_tools_and_trains_on_calls(chatml_polyglot_dir: Path):
    tokenizer = load(chatml_polyglot_dir, ChatTokens(template=HERMES_TEMPLATE))
    assert tokenizer.chat_tokens.end_of_turn == "<|im_end|>"
    messages = conversation(arguments='{"city": "서울"}')
    text = tokenizer.render_chat(messages, tools=TOOLS)
    theirs = AutoTokenizer.from_pretrained(chatml_polyglot_dir)
    assert text == theirs.apply_chat_template(
        messages, tools=TOOLS, chat_template=HERMES_TEMPLATE, tokenize=False
    )
    assert "# Tools\n<tools>\n" + json.dumps(WEATHER, ensure_ascii=False) in text
    chat = tokenizer.encode_chat(messages, tools=TOOLS)
    whole_text = RustTokenizer.from_file(str(chatml_polyglot_dir / "tokenizer.json"))
    assert chat.ids == whole_text.encode(text, add_special_tokens=False).ids

    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    runs, start = [], None
    for k, trained in enumerate([*chat.assistant_mask, False]):
        if trained and start is None:
            start = k
        elif not trained and start is not None:
            runs.append((start, k))
            start = None
    assert len(runs) == len(replies)
    expected = [
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "서울"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call><|im_end|>',
        messages[5]["content"] + "<|im_end|>",
        '확인해 볼게요.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "서울", "days": 1}}\n'
        "</tool_call><|im_end|>",
    ]
    for index, (begin, end), reply in zip(replies, runs, expected, strict=True):
        prompt = tokenizer.encode_chat(messages[:index], add_generation_prompt=True, tools=TOOLS).ids
        assert chat.ids[: len(prompt)] == prompt and len(prompt) == begin
        assert tokenizer.decode(chat.ids[begin:end]) == reply


def test_hugging_face_template_without_tools_refuses_them(chatml_polyglot_dir: Path):
    tokenizer = load(chatml_polyglot_dir)
    messages = [{"role": "user", "content": "안녕"}]
    with pytest.raises(ChatFormatError, match="does not render tools"):
        tokenizer.encode_chat(messages, add_generation_prompt=True, tools=TOOLS)
    assert tokenizer.encode_chat(messages, True, tools=[]) == tokenizer.encode_chat(messages, True)
