"""Parsing tool calls from generated text, whole and streamed, and the grammar that forces them."""

from __future__ import annotations

import itertools
import re

import llguidance
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcx.serve.tool_calls import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    ToolCall,
    ToolCallStream,
    parse_tool_calls,
    tool_call_lark,
)
from hcx.tokenizer import HcxTokenizer
from hcx.tokenizer.tool_markup import calls_text
from tests.tool_specs import CLOCK, TOOLS, WEATHER

GOOD = '<tool_call>{"name":"get_weather","arguments":{"city":"서울"}}</tool_call>'
SPACED = '<tool_call>\n{"name": "now", "arguments": {"tz": "Asia/Seoul", "n": [1, 2]}}\n</tool_call>'
NO_ARGUMENTS = '<tool_call>{"name":"now"}</tool_call>'
BAD = [
    "<tool_call>{not json}</tool_call>",
    '<tool_call>{"arguments":{}}</tool_call>',
    '<tool_call>{"name":"f","arguments":"{\\"a\\":1}"}</tool_call>',
    '<tool_call>["now", {}]</tool_call>',
    "<tool_call></tool_call>",
]


def test_calls_and_the_content_around_them():
    content, calls = parse_tool_calls(f"날씨를 볼게요.{GOOD}\n{SPACED}{NO_ARGUMENTS} 끝")
    assert content == "날씨를 볼게요.\n 끝"
    assert calls == [
        ToolCall("get_weather", '{"city":"서울"}'),
        ToolCall("now", '{"tz":"Asia/Seoul","n":[1,2]}'),
        ToolCall("now", "{}"),
    ]
    assert parse_tool_calls("그냥 답") == ("그냥 답", [])
    assert parse_tool_calls(f"\n {GOOD}\n") == (None, [ToolCall("get_weather", '{"city":"서울"}')])
    assert parse_tool_calls("") == (None, [])


@pytest.mark.parametrize("bad", BAD)
def test_markup_that_is_no_call_stays_content(bad: str):
    assert parse_tool_calls(f"a{bad}b{GOOD}") == (f"a{bad}b", [ToolCall("get_weather", '{"city":"서울"}')])


def test_unterminated_and_nested_markup_is_content():
    assert parse_tool_calls(f"x{GOOD[:-3]}") == (f"x{GOOD[:-3]}", [])
    nested = f"{TOOL_CALL_OPEN}oops{GOOD}"
    assert parse_tool_calls(nested) == (nested, [])


def test_openai_shape_and_ids():
    content, calls = parse_tool_calls(GOOD + GOOD)
    assert content is None and calls[0] == calls[1] and calls[0].id != calls[1].id
    assert re.fullmatch(r"call_[0-9a-f]{24}", calls[0].id)
    assert calls[0].to_openai() == {
        "id": calls[0].id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"서울"}'},
    }


def test_the_chat_formats_markup_parses_back():
    """What hcx trains an assistant to write is what the server parses."""
    tool_calls = [
        {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "부산"}'}},
        {"id": "b", "type": "function", "function": {"name": "now", "arguments": {}}},
    ]
    assert parse_tool_calls("확인할게요." + calls_text(tool_calls)) == (
        "확인할게요.",
        [ToolCall("get_weather", '{"city":"부산"}'), ToolCall("now", "{}")],
    )


def run_stream(pieces: list[str]) -> tuple[str | None, list[ToolCall], list[list]]:
    stream = ToolCallStream()
    batches = [stream.push(piece) for piece in pieces] + [stream.finish()]
    events = [e for batch in batches for e in batch]
    assert all(e for e in events if isinstance(e, str)), "no empty content deltas"
    content = "".join(e for e in events if isinstance(e, str))
    return content or None, [e for e in events if isinstance(e, ToolCall)], batches


def test_stream_emits_content_as_soon_as_it_cannot_open_a_call():
    _, _, batches = run_stream(
        ["안녕 <tool", "_ca", "ll>", '{"name":"now"', "}</tool_call", ">", " 끝 <", "b>"]
    )
    assert batches == [["안녕 "], [], [], [], [], [ToolCall("now", "{}")], [" 끝 "], ["<b>"], []]
    # an opening that turns out not to be one goes out at once
    _, _, batches = run_stream(["<tool_cal", "l!"])
    assert batches == [[], ["<tool_call!"], []]
    # whitespace alone around calls is no content; an unterminated call is content at the end
    call = ToolCall("get_weather", '{"city":"서울"}')
    assert run_stream(["\n", GOOD, " "])[2] == [[], [call], [], []]
    assert run_stream(["\n", f"{GOOD}\n", GOOD[:20]])[2] == [[], [call], [], ["\n\n" + GOOD[:20]]]


TEXTS = [
    f"날씨를 볼게요.{GOOD}\n{SPACED}{NO_ARGUMENTS} 끝",
    f"  \n{GOOD}{GOOD}\n",
    f"{BAD[0]}<tool<tool_call>{GOOD}<<tool_call>{BAD[2]}",
    f"답: <tool_c{GOOD}</tool_call>{TOOL_CALL_CLOSE}<tool_call>{{",
    "no calls at all, only <tool and <tool_ca and tool_call>",
]
FRAGMENTS = [
    GOOD,
    SPACED,
    NO_ARGUMENTS,
    *BAD,
    TOOL_CALL_OPEN,
    TOOL_CALL_CLOSE,
    "<tool",
    "<",
    "</tool_",
    "\n",
    " ",
    "말",
    "x",
]


def split(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({c % (len(text) + 1) for c in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(
    st.one_of(st.sampled_from(TEXTS), st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join)),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_stream_equals_parsing_the_whole_text(text: str, cuts: list[int]):
    content, calls, _ = run_stream(split(text, cuts))
    assert (content, calls) == parse_tool_calls(text)


def test_stream_char_by_char_on_every_text():
    for text in TEXTS:
        assert run_stream(list(text))[:2] == parse_tool_calls(text)


@pytest.fixture(scope="module")
def ll_tokenizer(tok: HcxTokenizer) -> llguidance.LLTokenizer:
    return llguidance.LLTokenizer(open(tok.path).read(), n_vocab=tok.vocab_size, eos_token=tok.end_of_turn_id)


def accepts(ll_tokenizer, tok: HcxTokenizer, grammar: str, text: str) -> bool:
    """Whether the whole of ``text`` is a complete output of ``grammar`` after which the turn may end."""
    matcher = llguidance.LLMatcher(ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar))
    ids = tok.encode(text)
    complete = matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()
    return complete and matcher.consume_token(tok.end_of_turn_id) and not matcher.is_error()


def test_grammars_compile(ll_tokenizer):
    for grammar in (
        tool_call_lark(TOOLS),
        tool_call_lark(TOOLS, name="get_weather"),
        tool_call_lark([CLOCK]),
    ):
        compiled = llguidance.LLMatcher.grammar_from_lark(grammar)
        assert llguidance.LLMatcher.validate_grammar_with_warnings(compiled, ll_tokenizer) == (False, [])


def test_grammar_for_any_of_the_tools(ll_tokenizer, tok):
    grammar = tool_call_lark(TOOLS)
    two = (
        '<tool_call>{"name":"get_weather","arguments":{"city":"서울","days":3}}</tool_call>'
        '<tool_call>{"name":"now","arguments":{}}</tool_call>'
    )
    for text in (GOOD, two, GOOD + GOOD):
        assert accepts(ll_tokenizer, tok, grammar, text), text
        assert parse_tool_calls(text)[0] is None
    for text in (
        "",
        "날씨를 볼게요." + GOOD,  # nothing but calls
        GOOD + " ",  # nothing after them
        GOOD.replace('"city":', '"city": '),  # compact JSON, as trained
        GOOD.replace('"서울"', "3"),  # arguments follow the schema
        '<tool_call>{"name":"get_weather","arguments":{"days":3}}</tool_call>',  # required city
        '<tool_call>{"name":"now","arguments":{"x":1}}</tool_call>',  # no parameters: no arguments
        '<tool_call>{"name":"search","arguments":{}}</tool_call>',  # only the given tools
        SPACED,
    ):
        assert not accepts(ll_tokenizer, tok, grammar, text), text


def test_grammar_for_a_named_tool(ll_tokenizer, tok):
    grammar = tool_call_lark(TOOLS, name="get_weather")
    assert accepts(ll_tokenizer, tok, grammar, GOOD)
    assert not accepts(ll_tokenizer, tok, grammar, GOOD + GOOD)
    assert not accepts(ll_tokenizer, tok, grammar, '<tool_call>{"name":"now","arguments":{}}</tool_call>')
    forced = llguidance.LLMatcher(
        ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(tool_call_lark(TOOLS, "now"))
    )
    assert forced.compute_ff_bytes().decode() == '<tool_call>{"name":"now","arguments":{}}</tool_call>'


def test_grammar_refuses_what_it_cannot_force():
    with pytest.raises(ValueError, match="'search', which is not among the tools"):
        tool_call_lark(TOOLS, name="search")
    with pytest.raises(ValueError, match="at least one tool"):
        tool_call_lark([])
    with pytest.raises(
        ValueError, match=r"tools\[0\]\.function\.parameters must be a JSON schema of type object"
    ):
        tool_call_lark([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}])
    with pytest.raises(ValueError, match=r"tools\[1\] must be"):
        tool_call_lark([WEATHER, {"name": "f"}])
