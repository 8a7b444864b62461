"""Reading a request's JSON body under limits, so that no body can make the server fail or stall.

The order is the cheap checks first: the declared media type (415), the size while the
bytes arrive (413, also for chunked bodies without ``Content-Length``), then emptiness,
UTF-8, JSON syntax and nesting depth (400). Nesting is bounded because JSON nested a
hundred thousand levels deep would otherwise exhaust Python's recursion (the parser's, or
later the chat template's and grammar compiler's) and surface as a 500.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import AsyncIterator
from typing import Any


class BodyError(Exception):
    """A body refused before validation, with its HTTP status and an OpenAI error code."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def check_media_type(content_type: str | None) -> None:
    """``application/json`` (or any ``+json`` type) or 415: other bodies are not parsed as JSON."""
    if content_type is None:
        raise BodyError(
            415,
            "the request has no Content-Type: send 'Content-Type: application/json'",
            "unsupported_media_type",
        )
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    if message.get_content_maintype() != "application" or not (
        subtype == "json" or subtype.endswith("+json")
    ):
        raise BodyError(
            415,
            f"Content-Type is {content_type!r}; the body must be JSON: send 'Content-Type: application/json'",
            "unsupported_media_type",
        )


async def read_limited(chunks: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, or 413 as soon as more than ``max_bytes`` have arrived."""
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(413, f"the request body is larger than {max_bytes} bytes", "request_too_large")
        parts.append(chunk)
    return b"".join(parts)


def parse_json(body: bytes, max_depth: int) -> Any:
    """The body's JSON value; 400 for an empty body, bad UTF-8, bad JSON or too deep nesting."""
    if not body.strip():
        raise BodyError(400, "the request body is empty: send a JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(
            400,
            f"the request body is not valid UTF-8 (byte 0x{body[error.start]:02x} at offset {error.start})",
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise BodyError(400, f"the body's JSON is nested more than {max_depth} levels deep") from None
    except ValueError as error:  # JSONDecodeError, and integers too long to convert
        raise BodyError(400, f"the body is not valid JSON ({error})") from None
    if nesting_exceeds(value, max_depth):
        raise BodyError(400, f"the body's JSON is nested more than {max_depth} levels deep")
    if not isinstance(value, dict):
        raise BodyError(400, f"the body must be a JSON object, not {json_kind(value)}")
    return value


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(type(value), "a value")


def nesting_exceeds(value: Any, max_depth: int) -> bool:
    """Whether arrays and objects nest more than ``max_depth`` levels (walked without recursion)."""
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
