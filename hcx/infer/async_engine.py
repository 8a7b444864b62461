"""Streaming on top of :class:`~hcx.infer.engine.Engine` for the OpenAI-compatible server.

One thread owns the engine: it applies queued submissions and cancellations between steps
and runs the steps back to back, handing each step's :class:`Delta` s to the event loop, which
routes them to their requests' queues. The event loop keeps serving connections while the
model computes, and the next step does not wait for it: with the step awaited from the
event loop instead, each step began only once the loop got round to it, behind the HTTP work
of the step before (measured in ``hcx serve`` at 64 streaming clients: a median 16–19 ms gap
between steps on a busy 2-core box, 8–11 % of the engine's time). A consumer that stops
iterating — a client disconnect cancels its task, or it breaks out of the loop — aborts its
request, which frees the running slot and the cache blocks before the next step.

With ``stream_interval`` N > 1 a stream gets its first token at once, then one delta per N
tokens (and the last one when it finishes): what a server sends per token (frames, JSON,
wakeups) is then paid once per N tokens, and the deltas still add up to the same tokens and
text.

Each step runs under :attr:`AsyncEngine.step_lock`; whoever holds it (from any thread) keeps
the engine between steps: new requests still arrive and queue, none advances. The server's
tests hold it to make a full queue and a stopped stream deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from hcx.infer.engine import Engine, Prompt
from hcx.infer.request import Completion, Delta, Request
from hcx.infer.sampling import SamplingParams


def merge_deltas(deltas: Sequence[Delta]) -> Delta:
    """Consecutive deltas of one request as one: tokens, log-probabilities and text joined, the
    last one's finish, the first one's prompt log-probabilities."""
    if len(deltas) == 1:
        return deltas[0]
    last = deltas[-1]
    return Delta(
        last.request_id,
        [t for d in deltas for t in d.token_ids],
        [lp for d in deltas for lp in d.logprobs],
        "".join(d.text for d in deltas),
        last.finish_reason,
        last.stop_reason,
        top_logprobs=[top for d in deltas for top in d.top_logprobs],
        prompt_logprobs=deltas[0].prompt_logprobs,
    )


@dataclass(eq=False)
class _Follower:
    """A followed request's queue, and the deltas held back until its stream interval is full."""

    queue: asyncio.Queue[Delta | BaseException] = field(default_factory=asyncio.Queue)
    held: list[Delta] = field(default_factory=list)
    num_held_tokens: int = 0
    started: bool = False


class AsyncEngine:
    def __init__(self, engine: Engine, stream_interval: int = 1):
        if stream_interval < 1:
            raise ValueError(f"stream_interval must be at least 1, not {stream_interval}")
        self.engine = engine
        self.stream_interval = stream_interval
        self._followers: dict[str, _Follower] = {}
        self._submitted: list[Request] = []
        self._cancelled: list[str] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self.step_lock = threading.Lock()

    @property
    def num_open_streams(self) -> int:
        """Streams being followed: each holds an engine request until it finishes or is closed."""
        return len(self._followers)

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
        if request_id is not None and request_id in self._followers:
            raise ValueError(f"request id {request_id!r} is already in use")

    async def _follow(self, request: Request) -> AsyncIterator[Delta]:
        self._check_open(request.request_id)
        follower = _Follower()
        self._followers[request.request_id] = follower
        with self._pending_lock:
            self._submitted.append(request)
        self._start()
        finished = False
        try:
            while not finished:
                item = await follower.queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._followers.pop(request.request_id, None)
            if not finished:
                with self._pending_lock:
                    self._cancelled.append(request.request_id)
                self._wake.set()

    async def generate(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> Completion:
        """The whole completion of one request (a non-streaming server call)."""
        whole = merge_deltas([delta async for delta in self.stream(prompt, params, request_id)])
        assert whole.finish_reason is not None
        return Completion(
            request_id=whole.request_id,
            prompt_ids=self.engine.encode(prompt),
            token_ids=whole.token_ids,
            logprobs=whole.logprobs,
            text=whole.text,
            finish_reason=whole.finish_reason,
            stop_reason=whole.stop_reason,
            top_logprobs=whole.top_logprobs,
            prompt_logprobs=whole.prompt_logprobs,
        )

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="hcx-engine", daemon=True)
            self._thread.start()
        self._wake.set()

    def _apply_pending(self) -> None:
        with self._pending_lock:
            submitted, self._submitted = self._submitted, []
            cancelled, self._cancelled = self._cancelled, []
        for request_id in cancelled:
            self.engine.abort(request_id)
        for request in submitted:
            if request.request_id in self._followers:
                self.engine.add(request)

    def _fail_all(self, error: BaseException) -> None:
        """Abort every followed request (in the engine's thread) and end its stream with ``error``."""
        with self._pending_lock:
            self._submitted.clear()
        failed = list(self._followers)
        for request_id in failed:
            self.engine.abort(request_id)
        self._deliver(self._fail_streams, failed, error)

    def _fail_streams(self, request_ids: list[str], error: BaseException) -> None:
        for request_id in request_ids:
            follower = self._followers.get(request_id)
            if follower is not None:
                follower.queue.put_nowait(error)

    def _deliver(self, callback: Callable[..., None], *args: object) -> None:
        """Run ``callback(*args)`` in the event loop, which owns the streams' queues (none once it closed)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(callback, *args)

    def _run(self) -> None:
        """The engine thread: steps while there is work, sleeps until a request comes or the engine closes."""
        while not self._closing:
            self._wake.clear()
            self._apply_pending()
            if not self.engine.has_unfinished():
                self._wake.wait()
                continue
            try:
                deltas = self._locked_step()
            except Exception as error:
                self._fail_all(error)
                continue
            self._deliver(self._route, deltas)
        self._apply_pending()
        self._fail_all(RuntimeError("the engine was closed"))

    def _route(self, deltas: list[Delta]) -> None:
        """Each delta to its stream: the first at once, then every ``stream_interval`` tokens and the last."""
        for delta in deltas:
            follower = self._followers.get(delta.request_id)
            if follower is None:
                continue
            follower.held.append(delta)
            follower.num_held_tokens += len(delta.token_ids)
            if follower.started and follower.num_held_tokens < self.stream_interval and not delta.finished:
                continue
            follower.queue.put_nowait(merge_deltas(follower.held))
            follower.held, follower.num_held_tokens, follower.started = [], 0, True

    def _locked_step(self) -> list[Delta]:
        with self.step_lock:
            return self.engine.step()

    async def close(self) -> None:
        """Stop after the step in progress; running streams end with an error, blocks are freed.

        The engine is only touched between steps, never while a step runs.
        """
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
