"""The OpenAI-compatible HTTP API and the web chat page (SPEC §8), on the engine's continuous batching.

Every choice becomes one engine request (``n`` per prompt; the samples of a prompt share
its cache) fed by :class:`~hcx.infer.async_engine.AsyncEngine`, so all clients share the
running batch. Log-probabilities, ``echo``, penalties, ``logit_bias``, ``response_format``
and forced tool calls are engine features (:mod:`hcx.infer`); this module maps their
OpenAI spellings and shapes, and parses tool calls out of the answers
(:mod:`hcx.serve.tool_calls`). A client that goes away — a closed stream, or a dropped connection while a
non-streaming request waits — aborts its engine requests, freeing their batch slots and
cache blocks before the next step.

Nothing a client sends may fail the server (a 5xx) or hold it without bound. Bodies are read
under a size limit and parsed under a nesting limit (:mod:`hcx.serve.body`), requests past
the queue bound are refused at once with 429 and ``Retry-After`` (:mod:`hcx.serve.admission`),
and ``/health`` shows the running, queued and admitted counts and the free cache blocks.
Refusals use the OpenAI error shape
``{"error": {"message", "type", "param", "code"}}`` with a message that says what is wrong,
so the ``openai`` package raises them as its usual ``BadRequestError`` & co.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from hcx.config import Section
from hcx.infer.async_engine import AsyncEngine, merge_deltas
from hcx.infer.engine import Engine
from hcx.infer.grammar import GrammarError, json_grammar, lark_grammar
from hcx.infer.request import Delta, TokenLogprob, TopLogprobs
from hcx.infer.sampling import SamplingParams
from hcx.serve.admission import Admission, QueueFull, Ticket, TooManySequences
from hcx.serve.body import BodyError, check_media_type, parse_json, read_limited
from hcx.serve.logprobs import TokenTexts, chat_logprobs, completion_logprobs
from hcx.serve.openai_schema import (
    ApiRequest,
    ChatCompletionRequest,
    CompletionRequest,
    NamedToolChoice,
    chat_choice,
    chat_chunk,
    chat_completion,
    error_body,
    model_list,
    text_choice,
    text_completion,
    usage,
    usage_chunk,
)
from hcx.serve.openapi import (
    AUTH_ERRORS,
    COMPLETION_RESPONSES,
    ServedLimits,
    install_openapi,
    request_body,
)
from hcx.serve.tool_calls import ToolCall, ToolCallStream, parse_tool_calls, tool_call_lark
from hcx.tokenizer import Tokenizer
from hcx.tokenizer.chat import ChatFormatError
from hcx.tokenizer.specials import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

WEB_DIR = Path(__file__).parent / "web"
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# A positive temperature or top_p below this is sampled as this (the same draw: the top token).
# The sampler's float32 tensors round 5e-324 to 0, which then divides by zero or keeps no token.
MIN_SAMPLING_SCALE = 1e-30
STREAM_INTERVAL = 4
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class ApiConfig(Section):
    """What the HTTP layer enforces on top of the engine's own limits."""

    served_name: str = Field(description="the model id clients send and /v1/models lists")
    api_key: str | None = Field(default=None, description="bearer token required on /v1/*; none: open")
    max_tokens: int | None = Field(
        default=None, ge=1, description="largest max_tokens a request may ask for; none: the context length"
    )
    max_body_bytes: int = Field(
        default=4_000_000,
        ge=1024,
        description="larger request bodies get 413, refused by Content-Length or while a chunked body arrives",
    )
    max_queued: int = Field(
        default=256,
        ge=0,
        description=(
            "engine sequences (a request's prompts × n) that may wait for a batch slot beyond "
            "engine.max_running; a request that would exceed running + queued gets 429 with Retry-After "
            "at once instead of waiting without bound, one that could never fit gets 400"
        ),
    )
    retry_after_s: int = Field(
        default=1, ge=1, description="the Retry-After (seconds) of a 429 for a full queue"
    )
    stream_interval: int = Field(
        default=STREAM_INTERVAL,
        ge=1,
        description=(
            "tokens per streamed chunk after the first (sent at once); the last chunk may have fewer. "
            "Fewer frames cost the server less per token; the text they add up to is the same"
        ),
    )
    max_json_depth: int = Field(
        default=64,
        ge=4,
        description="deepest nesting of arrays and objects in a request body; deeper bodies get 400",
    )


class ApiError(Exception):
    """A refusal with its HTTP status and OpenAI error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code
        self.headers = headers


class ClientGone(Exception):
    """The client disconnected before a non-streaming answer was ready."""


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def sse(body: Any) -> bytes:
    return b"data: " + orjson.dumps(body) + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class RequestGate:
    """Checks made before a request body is read: the bearer key on ``/v1/`` and the body's declared size.

    The key is compared in constant time. Bodies sent without ``Content-Length`` (chunked)
    are counted while they are read (:func:`hcx.serve.body.read_limited`).
    """

    def __init__(self, app: ASGIApp, api_key: str | None, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes
        self.expected = f"Bearer {api_key}".encode() if api_key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> Response | None:
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"].startswith("/v1/"):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                message = "missing or wrong API key: send the header 'Authorization: Bearer <key>'"
                body = error_body(message, "invalid_request_error", code="invalid_api_key")
                return json_response(body, status=401, headers={"WWW-Authenticate": "Bearer"})
        declared = headers.get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_body_bytes:
            message = (
                f"the request body is larger than {self.max_body_bytes} bytes "
                f"(Content-Length: {declared.decode('latin-1')})"
            )
            return json_response(
                error_body(message, "invalid_request_error", code="request_too_large"), status=413
            )
        return None


class EventStreamResponse(StreamingResponse):
    """Server-sent events whose generator is closed (and its engine requests aborted) however it ends.

    The response is cancelled when the client disconnects (watched as :func:`unless_disconnected`
    does, on plain asyncio tasks: Starlette's own watch costs an anyio task group per response);
    the generator may then be suspended at a ``yield`` rather than inside the engine, so close
    it explicitly. The request's admission ticket is given back when the response is over,
    however it ends.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], ticket: Ticket, headers: dict[str, str]):
        super().__init__(content, headers=headers)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with contextlib.suppress(ClientGone):
                await unless_disconnected(receive, self.stream_response(send))
        finally:
            self.ticket.release()

    async def stream_response(self, send: Send) -> None:
        async with contextlib.aclosing(self.body_iterator):  # type: ignore[type-var]
            await super().stream_response(send)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work``, cancelling it (which aborts its engine requests) if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


async def merged(streams: Sequence[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """Deltas of several streams as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async with contextlib.aclosing(streams[0]) as only:  # type: ignore[type-var]
            async for delta in only:
                yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, Delta] | BaseException | None] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for delta in stream:
                    queue.put_nowait((index, delta))
        except Exception as error:
            queue.put_nowait(error)
        finally:
            queue.put_nowait(None)

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        open_streams = len(tasks)
        while open_streams:
            item = await queue.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class OpenAIServer:
    """Turns API requests into engine requests and engine deltas into API responses."""

    def __init__(self, engine: Engine, config: ApiConfig):
        if engine.tokenizer is None:
            raise ValueError("the server needs an engine with a tokenizer (chat template, text)")
        self.engine = engine
        self.tokenizer: Tokenizer = engine.tokenizer
        self.streams = AsyncEngine(engine, config.stream_interval)
        self.config = config
        self.context_length = engine.model.cfg.max_seq_len
        self.texts = TokenTexts(self.tokenizer)
        self.created = int(time.time())
        self.admission = Admission(engine.cfg.max_running, config.max_queued, config.retry_after_s)

    @property
    def max_tokens(self) -> int:
        """The largest ``max_tokens`` a request may ask for."""
        return min(self.config.max_tokens or self.context_length, self.context_length)

    # --- bodies ---------------------------------------------------------------------------
    async def read(self, request: Request, model: type[M]) -> M:
        """The body as ``model``: 415, 413 or 400 (naming the field) for what cannot be one."""
        try:
            check_media_type(request.headers.get("content-type"))
            body = await read_limited(request.stream(), self.config.max_body_bytes)
            value = parse_json(body, self.config.max_json_depth)
        except BodyError as error:
            raise ApiError(error.status, error.message, code=error.code) from None
        try:
            return model.model_validate(value)
        except ValidationError as error:
            message, param = _validation_message(error.errors())
            raise ApiError(400, message, param=param) from None

    # --- admission ----------------------------------------------------------------------
    def check_fits(self, sequences: int) -> None:
        """400 for a request that could never be admitted (checked before any prompt is encoded)."""
        if sequences > self.admission.capacity:
            self.admit(sequences)

    def admit(self, sequences: int) -> Ticket:
        """Hold ``sequences`` for a request, or refuse it: 429 with Retry-After when the queue is full."""
        try:
            return self.admission.admit(sequences)
        except TooManySequences as error:
            raise ApiError(400, str(error), param="n") from None
        except QueueFull as error:
            raise ApiError(
                429,
                str(error),
                type_="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(error.retry_after_s)},
            ) from None

    # --- checks -------------------------------------------------------------------------
    def check_model(self, body: ApiRequest) -> None:
        if body.model is not None and body.model != self.config.served_name:
            raise ApiError(
                404,
                f"model {body.model!r} is not served here; this server serves {self.config.served_name!r}",
                param="model",
                code="model_not_found",
            )

    def sampling(self, body: ApiRequest, prompt_tokens: int, param: str, **extra: Any) -> SamplingParams:
        """Engine sampling parameters, after checking the token budget against limits and context."""
        limit = self.max_tokens
        room = self.context_length - prompt_tokens
        if room <= 0 and body.max_tokens != 0:
            raise ApiError(
                400,
                f"the prompt has {prompt_tokens} tokens; the model's context is {self.context_length} tokens "
                "and leaves no room for an answer: shorten it",
                param=param,
                code="context_length_exceeded",
            )
        if body.max_tokens is not None and body.max_tokens > limit:
            raise ApiError(
                400, f"max_tokens is {body.max_tokens}, at most {limit} allowed", param="max_tokens"
            )
        if body.max_tokens is not None and body.max_tokens > room:
            raise ApiError(
                400,
                f"the prompt ({prompt_tokens} tokens) + max_tokens ({body.max_tokens}) exceeds the model's "
                f"context of {self.context_length} tokens; ask for at most {room} tokens",
                param="max_tokens",
                code="context_length_exceeded",
            )
        self.check_token_ids(body.token_bias, "logit_bias")
        return SamplingParams(
            max_new_tokens=body.max_tokens if body.max_tokens is not None else min(limit, room),
            temperature=body.temperature and max(body.temperature, MIN_SAMPLING_SCALE),
            top_p=max(body.top_p, MIN_SAMPLING_SCALE),
            top_k=min(body.top_k, self.engine.num_tokens),  # as large as the vocabulary keeps every token
            stop=body.stop_strings,
            seed=body.seed,
            stop_token_ids=[] if body.ignore_eos else None,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
            logit_bias=body.token_bias,
            **extra,
        )

    def check_token_ids(self, ids: Sequence[int], param: str) -> None:
        vocab = self.engine.num_tokens
        outside = next((t for t in ids if not 0 <= t < vocab), None)
        if outside is not None:
            raise ApiError(
                400, f"{param}: token id {outside} is outside the vocabulary [0, {vocab})", param=param
            )

    def open_samples(
        self, prompt: list[int], params: SamplingParams, n: int, request_id: str
    ) -> list[AsyncIterator[Delta]]:
        try:
            return self.streams.open_samples(prompt, params, n, request_id)
        except GrammarError as error:
            raise ApiError(400, f"the output grammar was refused: {error}", param="response_format") from None
        except ValueError as error:
            raise ApiError(400, str(error)) from None
        except RuntimeError as error:
            raise ApiError(503, str(error), type_="server_error") from None

    def grammar(self, body: ApiRequest) -> str | None:
        """The grammar ``response_format`` (or a forced tool call) puts on the output, if any."""
        try:
            if isinstance(body, ChatCompletionRequest) and body.forces_tool_call:
                named = (
                    body.tool_choice.function.name if isinstance(body.tool_choice, NamedToolChoice) else None
                )
                return lark_grammar(tool_call_lark(body.tool_specs, named))
            format_ = body.response_format
            if format_ is None or format_.type == "text":
                return None
            schema = format_.json_schema.schema_ if format_.json_schema is not None else None
            return json_grammar(schema if format_.type == "json_schema" else None)
        except ValueError as error:  # GrammarError included
            raise ApiError(400, f"the output grammar was refused: {error}", param="response_format") from None

    # --- prompts ------------------------------------------------------------------------
    def chat_prompt(self, body: ChatCompletionRequest) -> list[int]:
        turns = [message.as_turn() for message in body.messages]
        tools = body.tool_specs if body.uses_tools else None
        try:
            return self.tokenizer.encode_chat(
                {"messages": turns}, add_generation_prompt=True, tools=tools
            ).ids
        except ChatFormatError as error:
            raise ApiError(400, f"messages: {error}", param="messages") from None

    def completion_prompt(self, prompt: str | list[int], suffix: str | None) -> list[int]:
        """Text prompts start a document (the tokenizer's document start: ``<|endoftext|>`` as in hcx
        pretraining, a model's own BOS); token ids are used as given."""
        start = self.tokenizer.bos_id
        if not isinstance(prompt, str):
            self.check_token_ids(prompt, "prompt")
        ids = [start, *self.tokenizer.encode(prompt)] if isinstance(prompt, str) else list(prompt)
        if suffix is None:
            return ids
        if ids and ids[0] == start:
            ids = ids[1:]
        try:
            fim = [self.tokenizer.token_id(t) for t in (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)]
        except KeyError:
            raise ApiError(
                400,
                "suffix: this model's tokenizer has no fill-in-the-middle tokens "
                f"({FIM_PREFIX}, {FIM_SUFFIX}, {FIM_MIDDLE}); send the prompt without a suffix",
                param="suffix",
            ) from None
        return [start, fim[0], *ids, fim[1], *self.tokenizer.encode(suffix), fim[2]]

    # --- chat ---------------------------------------------------------------------------
    async def chat(self, request: Request, body: ChatCompletionRequest) -> Response:
        self.check_model(body)
        self.check_fits(body.n)
        prompt = self.chat_prompt(body)
        top = (body.top_logprobs or 0) if body.logprobs else 0
        params = self.sampling(
            body, len(prompt), param="messages", top_logprobs=top, grammar=self.grammar(body)
        )
        id_, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        streams = self.open_samples(prompt, params, body.n, id_)
        ticket = self.admit(body.n)
        if body.stream:
            events = self._chat_events(streams, id_, created, len(prompt), body)
            return EventStreamResponse(events, ticket, headers=SSE_HEADERS)
        try:
            return await self._chat_answer(request, streams, id_, created, len(prompt), body)
        finally:
            ticket.release()

    async def _chat_answer(
        self,
        request: Request,
        streams: list[AsyncIterator[Delta]],
        id_: str,
        created: int,
        prompt_tokens: int,
        body: ChatCompletionRequest,
    ) -> Response:
        model = self.config.served_name
        results = await unless_disconnected(request.receive, asyncio.gather(*(_collect(s) for s in streams)))
        choices = [self._chat_choice(i, result, body) for i, result in enumerate(results)]
        tokens = sum(len(r.token_ids) for r in results)
        return json_response(chat_completion(id_, created, model, choices, usage(prompt_tokens, tokens)))

    def _chat_choice(self, index: int, result: Collected, body: ChatCompletionRequest) -> dict[str, Any]:
        content: str | None = result.text
        calls: list[ToolCall] = []
        if body.uses_tools:
            content, calls = parse_tool_calls(result.text)
        logprobs = (
            chat_logprobs(self.texts, result.token_ids, result.logprobs, result.top_logprobs)
            if body.logprobs
            else None
        )
        finish = "tool_calls" if calls and result.finish == "stop" else result.finish
        return chat_choice(index, content, finish, logprobs, [c.to_openai() for c in calls])

    async def _chat_events(
        self,
        streams: list[AsyncIterator[Delta]],
        id_: str,
        created: int,
        prompt_tokens: int,
        body: ChatCompletionRequest,
    ) -> AsyncIterator[bytes]:
        """The SSE frames of a chat stream, those of one delta written together: the last delta's
        frames go out with the usage and ``[DONE]``."""
        model = self.config.served_name
        tool_streams = [ToolCallStream() for _ in streams] if body.uses_tools else None
        called = [0] * len(streams)

        def frames(index: int, delta: Delta) -> list[bytes]:
            logprobs = (
                chat_logprobs(self.texts, delta.token_ids, delta.logprobs, delta.top_logprobs)
                if body.logprobs
                else None
            )
            out = []
            if tool_streams is None:
                if delta.text or logprobs:
                    out.append(
                        sse(chat_chunk(id_, created, model, {"content": delta.text}, None, index, logprobs))
                    )
            else:
                stream = tool_streams[index]
                for event in [*stream.push(delta.text), *(stream.finish() if delta.finished else [])]:
                    if isinstance(event, ToolCall):
                        message = {"tool_calls": [{"index": called[index], **event.to_openai()}]}
                        called[index] += 1
                    else:
                        message = {"content": event}
                    out.append(sse(chat_chunk(id_, created, model, message, None, index, logprobs)))
                    logprobs = None
                if logprobs:
                    out.append(sse(chat_chunk(id_, created, model, {"content": ""}, None, index, logprobs)))
            if delta.finished:
                finish = (
                    "tool_calls" if called[index] and delta.finish_reason == "stop" else delta.finish_reason
                )
                out.append(sse(chat_chunk(id_, created, model, {}, finish, index)))
            return out

        role = {"role": "assistant", "content": ""}
        yield b"".join(sse(chat_chunk(id_, created, model, role, index=i)) for i in range(len(streams)))
        tokens, unfinished, last = 0, len(streams), []
        async with contextlib.aclosing(merged(streams)) as deltas:
            try:
                async for index, delta in deltas:
                    tokens += len(delta.token_ids)
                    unfinished -= delta.finished
                    out = frames(index, delta)
                    if not unfinished:
                        last = out
                    elif out:
                        yield b"".join(out)
            except Exception as error:
                yield sse(error_body(f"generation failed: {error}", "server_error"))
                return
        if body.include_usage:
            chunk = usage_chunk(id_, created, model, "chat.completion.chunk", usage(prompt_tokens, tokens))
            last.append(sse(chunk))
        yield b"".join([*last, SSE_DONE])

    # --- text completions ---------------------------------------------------------------
    async def complete(self, request: Request, body: CompletionRequest) -> Response:
        self.check_model(body)
        sequences = len(body.prompts) * body.n
        self.check_fits(sequences)
        prompts = [self.completion_prompt(p, body.suffix) for p in body.prompts]
        scores_prompt = body.echo and (body.logprobs is not None or body.max_tokens == 0)
        extra = {
            "top_logprobs": body.logprobs or 0,
            "prompt_logprobs": (body.logprobs or 0) if scores_prompt else None,
            "grammar": self.grammar(body),
        }
        params = [self.sampling(body, len(p), param="prompt", **extra) for p in prompts]
        id_, created, model = f"cmpl-{uuid.uuid4().hex}", int(time.time()), self.config.served_name
        # Validate every prompt before any stream opens, so a refused prompt leaves nothing behind.
        streams = [
            stream
            for i, (prompt, sp) in enumerate(zip(prompts, params, strict=True))
            for stream in self.open_samples(prompt, sp, body.n, f"{id_}-{i}")
        ]
        echoed = [
            (raw if isinstance(raw, str) else self.tokenizer.decode(ids)) if body.echo else ""
            for raw, ids in zip(body.prompts, prompts, strict=True)
        ]
        # A text prompt's document start was added here: it is neither echoed nor listed.
        unscored = [
            [] if isinstance(raw, str) else ids[:1] for raw, ids in zip(body.prompts, prompts, strict=True)
        ]
        prompt_tokens = sum(len(p) for p in prompts)
        ticket = self.admit(sequences)
        if body.stream:
            events = self._completion_events(streams, id_, created, prompt_tokens, body, unscored, echoed)
            return EventStreamResponse(events, ticket, headers=SSE_HEADERS)
        try:
            results = await unless_disconnected(
                request.receive, asyncio.gather(*(_collect(s) for s in streams))
            )
        finally:
            ticket.release()
        choices = []
        for index, result in enumerate(results):
            which = index // body.n
            logprobs = self._text_logprobs(body, unscored[which], result)
            choices.append(text_choice(index, echoed[which] + result.text, result.finish, logprobs))
        tokens = sum(len(r.token_ids) for r in results)
        return json_response(text_completion(id_, created, model, choices, usage(prompt_tokens, tokens)))

    def _text_logprobs(
        self, body: CompletionRequest, unscored: list[int], result: Collected, offset: int = 0
    ) -> dict[str, list] | None:
        """The choice's ``logprobs`` (from character ``offset`` on): with echo, the prompt's tokens
        first, ``unscored`` (a token-id prompt's first token) with ``null``. Offsets add up the
        token texts, as vLLM's do."""
        if body.logprobs is None:
            return None
        entries: list[TokenLogprob | int] = []
        if body.echo and result.prompt_logprobs is not None:
            entries = [*unscored, *result.prompt_logprobs]
        entries += [
            TokenLogprob(t, lp, top)
            for t, lp, top in zip(
                result.token_ids,
                result.logprobs,
                result.top_logprobs or [()] * len(result.token_ids),
                strict=True,
            )
        ]
        return completion_logprobs(self.texts, entries, offset)

    async def _completion_events(
        self,
        streams: list[AsyncIterator[Delta]],
        id_: str,
        created: int,
        prompt_tokens: int,
        body: CompletionRequest,
        unscored: list[list[int]],
        echoed: list[str],
    ) -> AsyncIterator[bytes]:
        """The SSE frames of a text completion stream; the last one goes out with the usage and ``[DONE]``."""
        model = self.config.served_name
        tokens, unfinished, last = 0, len(streams), []
        started = [False] * len(streams)
        offsets = [0] * len(streams)
        async with contextlib.aclosing(merged(streams)) as deltas:
            try:
                async for index, delta in deltas:
                    tokens += len(delta.token_ids)
                    unfinished -= delta.finished
                    which = index // body.n
                    text = delta.text
                    if not started[index]:
                        started[index] = True
                        text = echoed[which] + text
                    result = Collected(
                        token_ids=delta.token_ids,
                        logprobs=delta.logprobs,
                        top_logprobs=delta.top_logprobs,
                        prompt_logprobs=delta.prompt_logprobs,
                    )
                    logprobs = self._text_logprobs(body, unscored[which], result, offsets[index])
                    if logprobs is not None:
                        offsets[index] += sum(map(len, logprobs["tokens"]))
                    if text or delta.finished or logprobs:
                        choice = text_choice(index, text, delta.finish_reason, logprobs)
                        frame = sse(text_completion(id_, created, model, [choice], None))
                        if not unfinished:
                            last.append(frame)
                        else:
                            yield frame
            except Exception as error:
                yield sse(error_body(f"generation failed: {error}", "server_error"))
                return
        if body.include_usage:
            last.append(
                sse(usage_chunk(id_, created, model, "text_completion", usage(prompt_tokens, tokens)))
            )
        yield b"".join([*last, SSE_DONE])

    def health(self) -> dict[str, Any]:
        """Liveness plus the batch state (what a load balancer or a test watches)."""
        return {
            "status": "ok",
            "model": self.config.served_name,
            "running": self.engine.num_running,
            "waiting": self.engine.num_waiting,
            "free_cache_blocks": self.engine.pool.num_free,
            "cache_blocks": self.engine.pool.num_blocks,
            "steps": self.engine.num_steps,
            "computed_tokens": self.engine.num_computed_tokens,
            "prefix_cache_hit_rate": round(self.engine.prefix_cache_hit_rate, 4),
            "cached_blocks": self.engine.pool.num_cached,
            "open_streams": self.streams.num_open_streams,
            "admitted_sequences": self.admission.admitted,
            "max_sequences": self.admission.capacity,
            "refused_requests": self.admission.refused,
        }


@dataclass
class Collected:
    """What a stream (or one delta of it) produced."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None
    finish: str = "abort"


async def _collect(deltas: AsyncIterator[Delta]) -> Collected:
    """A whole stream, gathered."""
    async with contextlib.aclosing(deltas):  # type: ignore[type-var]
        received = [delta async for delta in deltas]
    if not received:
        return Collected()
    whole = merge_deltas(received)
    return Collected(
        whole.text,
        whole.token_ids,
        whole.logprobs,
        whole.top_logprobs,
        whole.prompt_logprobs,
        whole.finish_reason or Collected.finish,
    )


def _validation_message(errors: Sequence[Any]) -> tuple[str, str | None]:
    """The first problems of a request body, as 'field: what is wrong', and the first field's name."""
    problems = []
    for err in errors:
        loc = [p for p in err["loc"] if p != "body"]
        param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or None
        if err["type"] == "extra_forbidden":
            message = "unsupported parameter"
        elif err["type"] == "json_invalid":
            message = f"the body is not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append((f"{param}: {message}" if param else message, param))
    if not problems:
        return "invalid request", None
    return "; ".join(dict.fromkeys(m for m, _ in problems[:3])), problems[0][1]


def create_app(engine: Engine, config: ApiConfig) -> FastAPI:
    """The FastAPI application: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``, ``/``."""
    server = OpenAIServer(engine, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await server.streams.close()

    app = FastAPI(title="hcx serve", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.server = server
    app.add_middleware(RequestGate, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    limits = ServedLimits(
        served_name=config.served_name,
        max_tokens=server.max_tokens,
        vocab_size=engine.num_tokens,
        max_choices=server.admission.capacity,
        secured=config.api_key is not None,
    )
    install_openapi(app, [ChatCompletionRequest, CompletionRequest], limits)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> Response:
        body = error_body(error.message, error.type, error.param, error.code)
        return json_response(body, error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        message, param = _validation_message(error.errors())
        return json_response(error_body(message, "invalid_request_error", param), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        return json_response(error_body(str(error.detail), "invalid_request_error"), error.status_code)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone) -> Response:
        return Response(status_code=499)

    @app.post(
        "/v1/chat/completions",
        openapi_extra=request_body(ChatCompletionRequest),
        responses=COMPLETION_RESPONSES,
    )
    async def chat_completions(request: Request) -> Response:
        return await server.chat(request, await server.read(request, ChatCompletionRequest))

    @app.post(
        "/v1/completions", openapi_extra=request_body(CompletionRequest), responses=COMPLETION_RESPONSES
    )
    async def completions(request: Request) -> Response:
        return await server.complete(request, await server.read(request, CompletionRequest))

    @app.get("/v1/models", responses=AUTH_ERRORS)
    async def models() -> Response:
        return json_response(model_list(config.served_name, server.created, server.context_length))

    @app.get("/health")
    async def health() -> Response:
        return json_response(server.health())

    @app.get("/", include_in_schema=False)
    async def chat_page() -> Response:
        return FileResponse(WEB_DIR / "chat.html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app
