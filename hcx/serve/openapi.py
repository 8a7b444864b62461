"""The server's OpenAPI document (``/openapi.json``): request bodies, limits and refusals as served.

The completion routes read and validate their bodies themselves (:mod:`hcx.serve.body`),
so their request schemas are added here from the pydantic models, with this server's
``max_tokens`` bound written in: a client (or a fuzzer) reading the document knows the
largest answer it may ask for. Every refusal is documented with the OpenAI error shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from hcx.serve.openai_schema import ErrorResponse

TOKEN_LIMIT_FIELDS = ("max_tokens", "max_completion_tokens")
SSE_EVENT = {  # one server-sent event: a JSON chunk, an error object, or [DONE]
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "string"}},
}


def _error(description: str, **extra: Any) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description, **extra}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {401: _error("missing or wrong API key")}
COMPLETION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the completion; with stream: true, server-sent events ending in 'data: [DONE]'",
        "content": {"text/event-stream": {"schema": SSE_EVENT}},
    },
    400: _error("a field, the prompt's length or the body is invalid; the message names the field"),
    **AUTH_ERRORS,
    404: _error("the model is not served here"),
    413: _error("the body is larger than api.max_body_bytes"),
    415: _error("the body is not declared as JSON"),
    429: _error(
        "the queue is full (api.max_queued); retry after Retry-After seconds",
        headers={"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}},
    ),
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads a ``model`` from its JSON body itself."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@dataclass(frozen=True)
class ServedLimits:
    """What this server accepts beyond the models' own rules, written into the document."""

    served_name: str
    max_tokens: int
    vocab_size: int
    max_choices: int
    secured: bool


def install_openapi(app: FastAPI, models: list[type[BaseModel]], limits: ServedLimits) -> None:
    """Serve the document with ``models``' schemas and this server's ``limits`` in them."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(_model_schemas(models))
            for model in models:
                _write_limits(schemas[model.__name__], limits)
            if limits.secured:
                _require_bearer(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _model_schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    _, defs = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    return defs.get("$defs", {})


def _write_limits(schema: dict[str, Any], limits: ServedLimits) -> None:
    fields = schema.get("properties", {})
    for name in TOKEN_LIMIT_FIELDS:
        for branch in _branches(fields.get(name)):
            if branch.get("type") == "integer":
                branch["maximum"] = limits.max_tokens
    if "model" in fields:
        fields["model"]["anyOf"] = [{"const": limits.served_name}, {"type": "null"}]
    if "n" in fields:
        fields["n"]["maximum"] = min(fields["n"].get("maximum", limits.max_choices), limits.max_choices)
    for branch in _branches(fields.get("prompt")):
        _bound_token_ids(branch, limits.vocab_size)


def _branches(field: dict[str, Any] | None) -> list[dict[str, Any]]:
    if field is None:
        return []
    return field.get("anyOf", [field])


def _bound_token_ids(schema: dict[str, Any], vocab_size: int) -> None:
    """Token ids (integers, at any depth of arrays) lie in ``[0, vocab_size)``."""
    if schema.get("type") == "integer":
        schema.update(minimum=0, maximum=vocab_size - 1)
    elif schema.get("type") == "array" and "items" in schema:
        _bound_token_ids(schema["items"], vocab_size)


def _require_bearer(document: dict[str, Any]) -> None:
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, operations in document.get("paths", {}).items():
        if path.startswith("/v1/"):
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
