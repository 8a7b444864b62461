"""Streaming on top of :class:`~hcx.infer.engine.Engine` for the OpenAI-compatible server.

One background task owns the engine: it applies queued submissions and cancellations
between steps, runs each step in a worker thread (so the event loop keeps serving
connections while the model computes) and routes each :class:`Delta` to its request's
queue. A consumer that stops iterating — a client disconnect cancels its task, or it
breaks out of the loop — aborts its request, which frees the running slot and the cache
blocks before the next step.

Each step runs under :attr:`AsyncEngine.step_lock`; whoever holds it (from any thread) keeps
the engine between steps: new requests still arrive and queue, none advances. The server's
tests hold it to make a full queue and a stopped stream deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from hcx.infer.engine import Engine, Prompt
from hcx.infer.request import Completion, Delta, Request
from hcx.infer.sampling import SamplingParams


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._queues: dict[str, asyncio.Queue[Delta | BaseException]] = {}
        self._submitted: list[Request] = []
        self._cancelled: list[str] = []
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._closing = False
        self.step_lock = threading.Lock()

    @property
    def num_open_streams(self) -> int:
        """Streams being followed: each holds an engine request until it finishes or is closed."""
        return len(self._queues)

    async def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        """Deltas of one request as the engine produces them; the last has ``finish_reason``.

        Bad input raises at the first iteration, before anything is queued.
        """
        async with contextlib.aclosing(self.open_stream(prompt, params, request_id)) as deltas:
            async for delta in deltas:
                yield delta

    def open_stream(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> AsyncIterator[Delta]:
        """As :meth:`stream`, but bad input raises here, so a server can refuse it before responding.

        The request joins the engine at the first iteration; a stream never iterated costs nothing.
        """
        self._check_open(request_id)
        request = self.engine.make_request(prompt, params or SamplingParams(), request_id)
        return self._follow(request)

    def open_samples(
        self, prompt: Prompt, params: SamplingParams, n: int, request_id: str
    ) -> list[AsyncIterator[Delta]]:
        """``n`` streams of samples of one prompt, which compute the prompt once
        (:meth:`Engine.make_samples`); bad input raises here."""
        self._check_open(None)
        return [self._follow(r) for r in self.engine.make_samples(prompt, params, n, request_id)]

    def _check_open(self, request_id: str | None) -> None:
        if self._closing:
            raise RuntimeError("the engine was closed")
        if request_id is not None and request_id in self._queues:
            raise ValueError(f"request id {request_id!r} is already in use")

    async def _follow(self, request: Request) -> AsyncIterator[Delta]:
        self._check_open(request.request_id)
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        self._queues[request.request_id] = queue
        self._submitted.append(request)
        self._start()
        finished = False
        try:
            while not finished:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._queues.pop(request.request_id, None)
            if not finished:
                self._cancelled.append(request.request_id)
                self._wake.set()

    async def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> Completion:
        """The whole completion of one request (a non-streaming server call)."""
        deltas = [delta async for delta in self.stream(prompt, params, request_id)]
        last = deltas[-1]
        assert last.finish_reason is not None
        return Completion(
            request_id=last.request_id,
            prompt_ids=self.engine.encode(prompt),
            token_ids=[t for d in deltas for t in d.token_ids],
            logprobs=[lp for d in deltas for lp in d.logprobs],
            text="".join(d.text for d in deltas),
            finish_reason=last.finish_reason,
            stop_reason=last.stop_reason,
            top_logprobs=[top for d in deltas for top in d.top_logprobs],
            prompt_logprobs=deltas[0].prompt_logprobs,
        )

    def _start(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def _apply_pending(self) -> None:
        for request_id in self._cancelled:
            self.engine.abort(request_id)
        self._cancelled.clear()
        for request in self._submitted:
            if request.request_id in self._queues:
                self.engine.add(request)
        self._submitted.clear()

    def _fail_all(self, error: BaseException) -> None:
        for request_id, queue in list(self._queues.items()):
            self.engine.abort(request_id)
            queue.put_nowait(error)
        self._submitted.clear()

    async def _run(self) -> None:
        while not self._closing:
            self._apply_pending()
            if not self.engine.has_unfinished():
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                deltas = await asyncio.to_thread(self._locked_step)
            except Exception as error:
                self._fail_all(error)
                continue
            for delta in deltas:
                queue = self._queues.get(delta.request_id)
                if queue is not None:
                    queue.put_nowait(delta)
        self._apply_pending()
        self._fail_all(RuntimeError("the engine was closed"))

    def _locked_step(self) -> list[Delta]:
        with self.step_lock:
            return self.engine.step()

    async def close(self) -> None:
        """Stop after the step in progress; running streams end with an error, blocks are freed.

        The engine is only touched between steps, never while a step runs in the worker thread.
        """
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
