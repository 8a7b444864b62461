"""Continuous batching (SPEC §5.3): who runs in the next step, and how many tokens each.

Every step has a token budget. Running requests come first, oldest first: a decoding
request takes one token, one still in prefill takes a chunk of its prompt. Waiting
requests are then admitted in arrival order while the budget, the running-slot limit and
the free cache blocks allow, their prompts split into chunks across steps if needed. So
prefill and decode share each step, a request joins as soon as a slot and blocks free up,
and it leaves the step it finishes.

Blocks are taken as tokens are computed, not reserved for the longest possible output.
When a running request needs a block and none is free, the youngest running request is
preempted (its blocks freed, recomputed later) — the policy of vLLM's recompute mode —
so cache memory never exceeds the pool and no request is refused for load.

Several samples of one prompt (``n > 1``) compute the prompt once: a sample whose
``parent`` is still running waits until the parent has cached all but the prompt's last
token, then shares the parent's full blocks and copies its partial one, and computes only
that last token itself (whose logits it samples from). If the parent is gone by then, the
sample computes the prompt on its own.

With prefix caching (``EngineConfig.prefix_caching``) every full block a request computes is
published by content (:class:`~hcx.infer.kv_pool.BlockPool`), and a request joining the
batch first holds the published blocks of its longest cached prefix — a shared system
prompt, the earlier turns of a chat, the few shots of an evaluation prompt, its own blocks
from before a preemption — and computes only the rest. At least the last known token is
always computed, so the request has logits to sample from (a scoring request computes
every position whose logits it reads). Requests that report prompt log-probabilities compute
their whole prompt (they still publish it). A waiting request whose next uncached block is
being computed by a running request waits for it (later requests may join before it): the
choices of one question, or items with the same few shots, submitted together compute their
common prefix once instead of once each.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hcx.infer.config import EngineConfig
from hcx.infer.kv_pool import BlockKey, BlockPool, extend_keys
from hcx.infer.request import Request


@dataclass(frozen=True)
class Scheduled:
    request: Request
    num_tokens: int

    @property
    def completes_prompt(self) -> bool:
        """After this chunk every known token is computed, so the next one is sampled."""
        return self.num_tokens == self.request.num_pending


class Scheduler:
    def __init__(self, cfg: EngineConfig, pool: BlockPool):
        self.cfg = cfg
        self.pool = pool
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.num_prefix_queried = 0  # tokens of admitted requests that needed keys and values
        self.num_prefix_hits = 0  # of those, found in the cache
        self._in_flight: dict[BlockKey, Request] = {}  # prompt blocks running requests will publish

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _grow(self, request: Request, num_tokens: int) -> bool:
        """Give ``request`` blocks for ``num_tokens`` more tokens, if the pool has them."""
        missing = self.pool.blocks_for(request.num_computed + num_tokens) - len(request.blocks)
        if missing > self.pool.num_free:
            return False
        if missing > 0:
            request.blocks.extend(self.pool.allocate(missing))
        return True

    def _preempt(self, request: Request) -> None:
        self.running.remove(request)
        self._drop_blocks(request)
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def schedule(self) -> list[Scheduled]:
        budget = self.cfg.max_step_tokens
        batch: list[Scheduled] = []
        for request in list(self.running):
            if budget == 0:
                break
            if request not in self.running:
                continue
            n = min(request.num_pending, budget)
            while not self._grow(request, n):
                self._preempt(self.running[-1])
                if request not in self.running:
                    break
            else:
                batch.append(Scheduled(request, n))
                budget -= n
        deferred: list[Request] = []
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_running:
            request = self.waiting[0]
            if request.parent is not None and not self._fork(request):
                break
            if self.cfg.prefix_caching and request.num_computed == 0:
                self._reuse_cached_prefix(request)
                if self._computed_elsewhere(request):
                    self._drop_blocks(request)
                    deferred.append(self.waiting.popleft())
                    continue
            n = min(request.num_pending, budget)
            needed = self.pool.blocks_for(n)
            if self.pool.num_free - needed < self.cfg.watermark_blocks or not self._grow(request, n):
                self._drop_blocks(request)  # held blocks would keep others from running
                break
            self.num_prefix_queried += request.num_pending + request.num_computed
            self.num_prefix_hits += request.num_computed
            self.waiting.popleft()
            self.running.append(request)
            self._claim(request)
            batch.append(Scheduled(request, n))
            budget -= n
        self.waiting.extendleft(reversed(deferred))
        return batch

    def _drop_blocks(self, request: Request) -> None:
        self._unclaim(request)
        self.pool.release(request.blocks)
        request.num_computed = 0
        request.num_published = 0

    def _reuse_cached_prefix(self, request: Request) -> None:
        if request.params.prompt_logprobs is not None:
            return
        reusable = request.first_logits_position // self.pool.block_size
        keys = extend_keys(request.block_keys, request.tokens, self.pool.block_size, reusable)
        request.blocks = self.pool.lookup(keys[:reusable])
        request.num_published = len(request.blocks)
        request.num_computed = len(request.blocks) * self.pool.block_size

    def _computed_elsewhere(self, request: Request) -> bool:
        """The first block ``request`` would compute is being computed by a running request."""
        following = len(request.blocks)
        reusable = request.first_logits_position // self.pool.block_size
        if request.params.prompt_logprobs is not None or following >= reusable:
            return False
        return self._in_flight.get(request.block_keys[following], request) is not request

    def _claim(self, request: Request) -> None:
        """Note the full prompt blocks ``request`` is about to compute, for :meth:`_computed_elsewhere`."""
        if not self.cfg.prefix_caching:
            return
        full = len(request.prompt_ids) // self.pool.block_size
        keys = extend_keys(request.block_keys, request.tokens, self.pool.block_size, full)
        for key in keys[request.num_published : full]:
            self._in_flight.setdefault(key, request)

    def _unclaim(self, request: Request) -> None:
        for key in request.block_keys[request.num_published :]:
            if self._in_flight.get(key) is request:
                del self._in_flight[key]

    def publish(self, request: Request) -> None:
        """Publish the blocks ``request`` has filled since the last call (with prefix caching)."""
        full = request.num_computed // self.pool.block_size
        if not self.cfg.prefix_caching or full <= request.num_published:
            return
        keys = extend_keys(request.block_keys, request.tokens, self.pool.block_size, full)
        for i in range(request.num_published, full):
            self.pool.publish(request.blocks[i], keys[i])
            if self._in_flight.get(keys[i]) is request:
                del self._in_flight[keys[i]]
        request.num_published = full

    def _fork(self, request: Request) -> bool:
        """Share the parent's cached prompt; False while the parent is still computing it."""
        parent, shared = request.parent, len(request.prompt_ids) - 1
        assert parent is not None
        if parent in self.running and parent.num_computed < shared:
            return False
        request.parent = None
        computes_itself = request.num_computed > 0 or request.params.prompt_logprobs is not None
        if parent not in self.running or shared == 0 or computes_itself:
            return True
        full, rest = divmod(shared, self.pool.block_size)
        if self.pool.num_free - (1 if rest else 0) < self.cfg.watermark_blocks + 1:
            request.parent = parent
            return False
        request.blocks = self.pool.share(parent.blocks[:full])
        if rest:
            [block] = self.pool.allocate(1)
            self.pool.copy_tokens(parent.blocks[full], block, rest)
            request.blocks.append(block)
        request.num_computed = shared
        return True

    def finish(self, request: Request) -> None:
        """Remove a finished or aborted request wherever it is and free its blocks."""
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self._unclaim(request)
        self.pool.release(request.blocks)
