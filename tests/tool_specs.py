"""Two tool definitions in the OpenAI shape, shared by the chat-format and tool-call parser tests."""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": '오늘의 날씨를 알려줍니다 ("섭씨")',
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "now", "description": "현재 시각"}}
TOOLS = [WEATHER, CLOCK]
