"""Tool calls through the ``openai`` client: a forced call is parsed into ``tool_calls`` (streaming
too), and the call and the tool's result go back through the chat template to the next answer."""

from __future__ import annotations

import json

import jsonschema

from hcx.serve.tool_calls import parse_tool_calls
from tests.serve.live_server import SERVED_NAME, LiveServer

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "오늘 날씨",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"enum": ["KST", "UTC"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}


def test_tool_call_round_trip(live_server: LiveServer):
    client = live_server.client()
    user = {"role": "user", "content": "서울 날씨 알려줘"}
    reply = client.chat.completions.create(
        model=SERVED_NAME,
        messages=[user],
        tools=[WEATHER, CLOCK],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=120,
        temperature=0.7,
        seed=1,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    history = [
        user,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "맑음, 21도"},
    ]
    answer = client.chat.completions.create(
        model=SERVED_NAME, messages=history, tools=[WEATHER, CLOCK], max_tokens=8, temperature=0
    )
    rendered = live_server.tok.encode_chat(
        {"messages": history}, add_generation_prompt=True, tools=[WEATHER, CLOCK]
    ).ids
    assert answer.usage.prompt_tokens == len(rendered)
    text = live_server.tok.decode(rendered)
    assert "<tool_response>맑음, 21도</tool_response>" in text
    assert (
        f'<tool_call>{{"name":"get_weather","arguments":{json.dumps(json.loads(call.function.arguments), ensure_ascii=False, separators=(",", ":"))}}}</tool_call>'
        in text
    )
    expected = live_server.expected(rendered, max_new_tokens=8, temperature=0.0)
    content, calls = parse_tool_calls(expected.text)
    assert answer.choices[0].message.content == content and not calls


def test_required_tool_call_streams(live_server: LiveServer):
    client = live_server.client()
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(
        model=SERVED_NAME,
        messages=[{"role": "user", "content": "지금 몇 시야?"}],
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        max_tokens=150,
        temperature=0.5,
        seed=4,
        stream=True,
    ):
        for choice in chunk.choices:
            assert not choice.delta.content
            for delta in choice.delta.tool_calls or []:
                calls[delta.index] = {"name": delta.function.name, "arguments": delta.function.arguments}
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for call in calls.values():
        tool = {"get_weather": WEATHER, "get_time": CLOCK}[call["name"]]
        jsonschema.validate(json.loads(call["arguments"]), tool["function"]["parameters"])
