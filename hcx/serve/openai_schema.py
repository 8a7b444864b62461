"""The OpenAI API shapes that ``hcx serve`` speaks (SPEC §8: an OpenAI-compatible API).

Requests are validated here, so a bad field is refused with the field's name before
anything reaches the engine. Parameters the engine cannot honour are refused rather than
silently ignored (``best_of`` > 1, unknown fields); harmless ones that only label a
request (``user``, ``metadata``) are accepted. ``top_k`` and ``ignore_eos`` (no stop at
end-of-turn: fixed-length outputs for benchmarks) are extensions, as in vLLM. Responses are
plain dicts built by the functions below: the server writes one per generated token when
streaming, and a dict serialised by ``orjson`` costs a fraction of a pydantic model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256


MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20
MAX_TOKEN_ID_DIGITS = 9  # a longer key is no vocabulary's token id (and int() of 4,300+ digits raises)

# The cross-field rules of the validators below, in JSON Schema, so that /openapi.json states
# exactly what is accepted: a client (or a fuzzer) can build valid requests from it, and
# anything it calls invalid is refused.
NOT_NULL = {"not": {"type": "null"}}
NO_TOOL_CALLS = {"anyOf": [{"type": "null"}, {"type": "array", "maxItems": 0}]}
MESSAGE_RULES = {
    "anyOf": [
        {
            "required": ["role", "tool_calls"],
            "properties": {"role": {"const": "assistant"}, "tool_calls": {"type": "array", "minItems": 1}},
        },
        {"required": ["content"], "properties": {"content": NOT_NULL, "tool_calls": NO_TOOL_CALLS}},
    ]
}
RESPONSE_FORMAT_RULES = {
    "anyOf": [
        {"properties": {"type": {"enum": ["text", "json_object"]}}},
        {
            "required": ["json_schema"],
            "properties": {
                "json_schema": {
                    "type": "object",
                    "required": ["schema"],
                    "properties": {"schema": {"type": "object"}},
                }
            },
        },
    ]
}
CHAT_RULES = {
    "allOf": [
        {
            "not": {
                "required": ["max_tokens", "max_completion_tokens"],
                "properties": {
                    "max_tokens": {"type": "integer"},
                    "max_completion_tokens": {"type": "integer"},
                },
            }
        },
        {"properties": {"max_tokens": {"not": {"const": 0}}}},
        {
            "anyOf": [
                {"properties": {"top_logprobs": {"type": "null"}}},
                {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
            ]
        },
        {
            "anyOf": [
                {"properties": {"tool_choice": {"enum": [None, "none"]}}},
                {"required": ["tools"], "properties": {"tools": {"type": "array", "minItems": 1}}},
            ]
        },
        {
            "not": {
                "required": ["tool_choice", "response_format"],
                "properties": {
                    "tool_choice": {"anyOf": [{"const": "required"}, {"type": "object"}]},
                    "response_format": {
                        "type": "object",
                        "properties": {"type": {"enum": ["json_object", "json_schema"]}},
                    },
                },
            }
        },
    ]
}
COMPLETION_RULES = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"max_tokens": {"not": {"const": 0}}}},
                {"required": ["echo"], "properties": {"echo": {"const": True}}},
            ]
        },
        {
            "not": {
                "required": ["echo", "suffix"],
                "properties": {"echo": {"const": True}, "suffix": {"type": "string"}},
            }
        },
    ]
}
TOKEN_ID_KEYS = {"propertyNames": {"pattern": f"^[0-9]{{1,{MAX_TOKEN_ID_DIGITS}}}$"}}


def is_json_int(value: Any) -> bool:
    """An integer as JSON Schema counts them: ``2`` and ``2.0``, but not ``true`` or ``"2"``."""
    return type(value) is int or (type(value) is float and value.is_integer())


def _integral(value: Any) -> Any:
    return int(value) if type(value) is float and value.is_integer() else value


# Integer fields of the strict models take ``2.0`` too, as their JSON Schema type does. Their
# bounds come before the validator inside ``Annotated``: anywhere else (``Field`` of an
# ``int | None`` field, or after the validator) pydantic writes them into the schema as
# ``ge``/``le``, which JSON Schema does not know, instead of ``minimum``/``maximum``.
_INTEGRAL = BeforeValidator(_integral)
Int = Annotated[int, _INTEGRAL]
NonNegativeInt = Annotated[int, Field(ge=0), _INTEGRAL]
PositiveInt = Annotated[int, Field(ge=1), _INTEGRAL]
Seed = Annotated[int, Field(ge=0, lt=2**62), _INTEGRAL]
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES), _INTEGRAL]
TopLogprobs = Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS), _INTEGRAL]


class Strict(BaseModel):
    """A request part whose unknown fields are errors that name them, and whose values have the
    documented JSON types: no ``"5"`` or ``false`` taken for a number, as the schema promises."""

    model_config = ConfigDict(extra="forbid", strict=True)


class JsonSchemaFormat(Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    """``text``, ``json_object`` (any JSON object) or ``json_schema`` (JSON matching a schema)."""

    model_config = ConfigDict(json_schema_extra=RESPONSE_FORMAT_RULES)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.schema_ is None):
            raise ValueError("type json_schema needs json_schema.schema")
        return self


class StreamOptions(Strict):
    include_usage: bool = False


class ApiRequest(Strict):
    """Fields shared by chat and text completions; unknown fields are errors that name them."""

    model: str | None = None
    max_tokens: NonNegativeInt | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: NonNegativeInt = Field(default=0, description="extension: 0 keeps every token")
    ignore_eos: bool = Field(default=False, description="extension: run to max_tokens (benchmarks)")
    stop: str | list[str] | None = None
    seed: Seed | None = None
    n: Choices = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        default=None, json_schema_extra=TOKEN_ID_KEYS
    )
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key in bias or {}:
            # str.isdigit alone accepts '²', which int() refuses: only ASCII decimal digits are ids.
            if not (key.isascii() and key.isdigit() and len(key) <= MAX_TOKEN_ID_DIGITS):
                raise ValueError(f"keys are token ids; {key!r} is not one")
        return bias

    @property
    def token_bias(self) -> dict[int, float]:
        return {int(k): v for k, v in (self.logit_bias or {}).items()}

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop: str | list[str] | None) -> str | list[str] | None:
        strings = [stop] if isinstance(stop, str) else stop or []
        if len(strings) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings")
        if any(not s or len(s) > MAX_STOP_CHARS for s in strings):
            raise ValueError(f"stop strings must have 1 to {MAX_STOP_CHARS} characters")
        return stop

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(Strict):
    """One part of a message whose content is a list (the newer OpenAI clients send these)."""

    type: Literal["text"]
    text: str


class FunctionCall(Strict):
    name: Annotated[str, Field(min_length=1)]
    arguments: str


class ToolCallItem(Strict):
    """A tool call of an earlier assistant turn, as the client sends it back."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    """A chat turn. ``developer`` is OpenAI's newer name for ``system`` and is rendered as one;
    ``tool`` carries a tool's result back to the model."""

    model_config = ConfigDict(json_schema_extra=MESSAGE_RULES)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_given(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def as_turn(self) -> dict[str, Any]:
        turn: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": self.text,
        }
        if self.tool_calls:
            turn["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            turn["tool_call_id"] = self.tool_call_id
        if self.name is not None and self.role == "tool":
            turn["name"] = self.name
        return turn


class FunctionSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(ApiRequest):
    model_config = ConfigDict(json_schema_extra=CHAT_RULES)

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: PositiveInt | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _one_token_limit(self) -> ChatCompletionRequest:
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        if self.max_tokens == 0:
            raise ValueError("max_tokens must be at least 1 for a chat completion")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tool_choice.function.name not in {
            t.function.name for t in self.tools or []
        }:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools")
        if self.forces_tool_call and self.response_format is not None and self.response_format.type != "text":
            raise ValueError("a forced tool call and response_format cannot both constrain the output")
        return self

    @property
    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    @property
    def tool_specs(self) -> list[dict[str, Any]]:
        """``tools`` as plain OpenAI-shaped dicts (what the chat template and the call grammar read)."""
        return [tool.model_dump(exclude_none=True) for tool in self.tools or []]

    @property
    def forces_tool_call(self) -> bool:
        return self.tool_choice == "required" or isinstance(self.tool_choice, NamedToolChoice)


TokenIds = Annotated[list[Int], Field(min_length=1)]


class CompletionRequest(ApiRequest):
    """``prompt``: a string, token ids, or a list of either (one choice per prompt, in order).

    ``suffix`` asks the model to fill in the middle between ``prompt`` and ``suffix``
    (the PSM arrangement it was pretrained on, SPEC §4).
    """

    model_config = ConfigDict(json_schema_extra=COMPLETION_RULES)

    prompt: (
        str
        | TokenIds
        | Annotated[list[str], Field(min_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    suffix: str | None = None
    echo: bool = False
    logprobs: TopLogprobs | None = None
    best_of: Literal[1] | None = Field(default=None, description="only 1: send n for several samples")

    @model_validator(mode="after")
    def _scoring_only(self) -> CompletionRequest:
        if self.max_tokens == 0 and not self.echo:
            raise ValueError("max_tokens 0 generates nothing: it needs echo (to score the prompt)")
        if self.echo and self.suffix is not None:
            raise ValueError("echo and suffix cannot be combined")
        return self

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_shape(cls, prompt: Any) -> Any:
        def is_ids(value: Any) -> bool:
            return isinstance(value, list) and bool(value) and all(is_json_int(t) for t in value)

        if isinstance(prompt, str) or is_ids(prompt):
            return prompt
        if (
            isinstance(prompt, list)
            and prompt
            and (all(isinstance(p, str) for p in prompt) or all(is_ids(p) for p in prompt))
        ):
            return prompt
        raise ValueError("must be a string, a list of token ids, or a list of strings or of token-id lists")

    @property
    def prompts(self) -> list[str | list[int]]:
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]  # type: ignore[list-item]
        return list(self.prompt)  # type: ignore[arg-type]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every refusal's body (documented in ``/openapi.json``; built by :func:`error_body`)."""

    error: ErrorDetail


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    """The OpenAI error object: ``openai`` raises it as ``APIStatusError`` with this message."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    id_: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": id_,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage_,
    }


def chat_choice(
    index: int,
    content: str | None,
    finish_reason: str,
    logprobs: list[dict[str, Any]] | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "index": index,
        "message": message,
        "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
        "finish_reason": finish_reason,
    }


def chat_chunk(
    id_: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    index: int = 0,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    choice = {
        "index": index,
        "delta": delta,
        "logprobs": {"content": logprobs, "refusal": None} if logprobs is not None else None,
        "finish_reason": finish_reason,
    }
    return {
        "id": id_,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }


def text_choice(
    index: int, text: str, finish_reason: str | None, logprobs: dict[str, list] | None = None
) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def text_completion(
    id_: str, created: int, model: str, choices: list[dict[str, Any]], usage_: dict[str, int] | None
) -> dict[str, Any]:
    """A whole text completion, or (with one choice and no usage) one streamed chunk of it."""
    body: dict[str, Any] = {
        "id": id_,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if usage_ is not None:
        body["usage"] = usage_
    return body


def usage_chunk(id_: str, created: int, model: str, object_: str, usage_: dict[str, int]) -> dict[str, Any]:
    """The last chunk of a stream with ``stream_options.include_usage``: no choices, the usage."""
    return {"id": id_, "object": object_, "created": created, "model": model, "choices": [], "usage": usage_}


def model_list(name: str, created: int, context_length: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "hcx",
                "max_model_len": context_length,
            }
        ],
    }
