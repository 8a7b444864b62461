"""The hcx inference engine (SPEC §5.3): KV-cached generation with continuous batching.

One engine serves PPO rollouts and evaluation (the synchronous :meth:`Engine.generate`,
:meth:`Engine.iter_generate` and :meth:`Engine.score`) and users (the asynchronous
:class:`hcx.infer.async_engine.AsyncEngine`, built on :meth:`Engine.step`). Each step the
:class:`~hcx.infer.scheduler.Scheduler` picks the requests and token counts, the packed
forward (:mod:`hcx.infer.step`) runs them together over the paged cache
(:mod:`hcx.infer.kv_pool`), and each request that reached the end of its known tokens
samples one more with its own generator (:mod:`hcx.infer.sampling`).

The engine uses the model it is given as is, without a copy: after a PPO update the next
step already generates with the new weights (cached keys/values of running requests were
computed with the old ones, as in any asynchronous RLHF rollout).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Sequence

import torch
from tqdm import tqdm

from hcx.infer.config import EngineConfig
from hcx.infer.grammar import Grammars
from hcx.infer.kv_pool import BlockPool
from hcx.infer.logits import adjust_logits
from hcx.infer.request import Completion, Delta, Request, TokenLogprob, TopLogprobs
from hcx.infer.sampling import SamplingParams, full_precision, sample_tokens
from hcx.infer.scheduler import Scheduler
from hcx.infer.scoring import ContinuationScore, check_pairs
from hcx.infer.step import SequenceChunk, pack_step, paged_forward
from hcx.infer.text import TextStream
from hcx.model.transformer import Transformer
from hcx.tokenizer import Tokenizer

Prompt = str | Sequence[int]
SCORING = SamplingParams(temperature=0.0, max_new_tokens=1, stop_token_ids=[])
"""The parameters of scoring requests, which end when their prompt is computed and never sample."""


def top_alternatives(logprobs: torch.Tensor, k: int, num_tokens: int) -> list[TopLogprobs]:
    """The ``k`` most likely tokens of each row of ``logprobs`` (N, V), most likely first."""
    if k == 0:
        return [()] * len(logprobs)
    values, ids = logprobs[:, :num_tokens].topk(k, dim=-1)
    return [tuple(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]


class Engine:
    """Continuous-batching generation over a fixed pool of cache blocks.

    ``tokenizer`` is optional: without it prompts must be token ids, outputs carry no text
    and stop strings are refused; with it, requests stop by default on end-of-turn and
    end-of-text.
    """

    def __init__(
        self, model: Transformer, tokenizer: Tokenizer | None = None, config: EngineConfig | None = None
    ):
        if model.tok_embeddings is None or model.output is None:
            raise ValueError("the engine needs a whole model, not a pipeline stage")
        self.model = model
        self.tokenizer = tokenizer
        self.cfg = config or EngineConfig()
        weight = model.tok_embeddings.weight
        self.device = weight.device
        self.pool = BlockPool(
            model.cfg, self.cfg.num_blocks, self.cfg.block_size, weight.device, weight.dtype
        )
        self.scheduler = Scheduler(self.cfg, self.pool)
        self.default_stop_ids: frozenset[int] = (
            frozenset({tokenizer.end_of_turn_id, tokenizer.eot_id}) if tokenizer is not None else frozenset()
        )
        self.num_tokens = tokenizer.vocab_size if tokenizer is not None else model.cfg.vocab_size
        if self.num_tokens > model.cfg.vocab_size:
            raise ValueError(
                f"tokenizer has {self.num_tokens} tokens but the model only {model.cfg.vocab_size}: "
                "they do not belong together"
            )
        self.grammars = (
            Grammars(tokenizer, [tokenizer.end_of_turn_id, tokenizer.eot_id])
            if tokenizer is not None
            else None
        )
        self._requests: dict[str, Request] = {}
        self._ids = itertools.count()
        self._seeds = random.Random(self.cfg.seed)
        self.num_steps = 0
        self.num_computed_tokens = 0

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise ValueError("a text prompt needs an engine with a tokenizer; pass token ids")
            return self.tokenizer.encode(prompt)
        return [int(t) for t in prompt]

    def _check_pool_holds(self, what: str, tokens: int) -> None:
        """Refuse ``what`` if its ``tokens`` could never be admitted (the pool less its watermark)."""
        if self.pool.blocks_for(tokens) > self.cfg.num_blocks - self.cfg.watermark_blocks:
            raise ValueError(
                f"{what}: {tokens} tokens need more than the cache pool's "
                f"{self.cfg.cache_tokens} tokens (engine num_blocks × block_size)"
            )

    def make_request(self, prompt: Prompt, params: SamplingParams, request_id: str | None = None) -> Request:
        """Validate and build a request without queueing it (bad input fails here, at submission)."""
        ids = self.encode(prompt)
        request_id = request_id if request_id is not None else f"req-{next(self._ids)}"
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not ids:
            raise ValueError(f"request {request_id}: empty prompt")
        vocab = self.num_tokens
        if any(not 0 <= t < vocab for t in ids):
            raise ValueError(
                f"request {request_id}: prompt has token ids outside the vocabulary [0, {vocab})"
            )
        total = len(ids) + params.max_new_tokens
        if total > self.model.cfg.max_seq_len:
            raise ValueError(
                f"request {request_id}: prompt of {len(ids)} tokens + max_new_tokens {params.max_new_tokens} "
                f"exceeds the model context of {self.model.cfg.max_seq_len} tokens"
            )
        self._check_pool_holds(f"request {request_id}", total)
        if params.stop and self.tokenizer is None:
            raise ValueError(f"request {request_id}: stop strings need an engine with a tokenizer")
        if any(not 0 <= t < vocab for t in params.logit_bias):
            raise ValueError(
                f"request {request_id}: logit_bias has token ids outside the vocabulary [0, {vocab})"
            )
        if params.grammar is not None and self.grammars is None:
            raise ValueError(f"request {request_id}: a grammar needs an engine with a tokenizer")
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(63)
        stop_ids = (
            self.default_stop_ids if params.stop_token_ids is None else frozenset(params.stop_token_ids)
        )
        return Request(
            request_id=request_id,
            prompt_ids=ids,
            params=params,
            stop_ids=stop_ids,
            generator=torch.Generator(device=self.device).manual_seed(seed),
            text_stream=TextStream(self.tokenizer, params.stop) if self.tokenizer is not None else None,
            grammar=self.grammars.matcher(params.grammar) if self.grammars and params.grammar else None,
        )

    def make_samples(self, prompt: Prompt, params: SamplingParams, n: int, request_id: str) -> list[Request]:
        """``n`` requests for one prompt (ids ``{request_id}-{i}``) that compute the prompt once.

        Sample ``i`` draws with seed ``seed + i``, so sample 0 is what ``n=1`` gives with the
        same seed, and the same seed gives the same samples.
        """
        seed = params.seed if params.seed is not None else self._seeds.getrandbits(62)
        first = self.make_request(prompt, params.model_copy(update={"seed": seed}), f"{request_id}-0")
        rest = [
            self.make_request(
                first.prompt_ids, params.model_copy(update={"seed": seed + i}), f"{request_id}-{i}"
            )
            for i in range(1, n)
        ]
        for sample in rest:
            sample.parent = first
        return [first, *rest]

    def add(self, request: Request) -> str:
        if request.request_id in self._requests:
            raise ValueError(f"request id {request.request_id!r} is already in use")
        self._requests[request.request_id] = request
        self.scheduler.add(request)
        return request.request_id

    def add_request(
        self, prompt: Prompt, params: SamplingParams | None = None, request_id: str | None = None
    ) -> str:
        """Queue a prompt; it joins the running batch at the next step with room for it."""
        return self.add(self.make_request(prompt, params or SamplingParams(), request_id))

    def abort(self, request_id: str) -> Delta | None:
        """Drop a request wherever it is (queue or batch) and free its cache blocks at once."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return None
        self.scheduler.finish(request)
        request.finish_reason = "abort"
        return Delta(request_id, [], [], "", "abort")

    def forget_cached_prefixes(self) -> None:
        """Call after changing the model's weights: cached prefixes were computed with the old ones."""
        self.pool.forget()

    @property
    def prefix_cache_hit_rate(self) -> float:
        """Share of admitted requests' tokens whose keys and values came from the cache."""
        return self.scheduler.num_prefix_hits / max(1, self.scheduler.num_prefix_queried)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    def request(self, request_id: str) -> Request:
        return self._requests[request_id]

    def step(self) -> list[Delta]:
        """Run one scheduler step; return what each request that sampled a token gained."""
        batch = self.scheduler.schedule()
        if not batch:
            return []
        chunks = [
            SequenceChunk(
                s.request.tokens[s.request.num_computed :][: s.num_tokens],
                s.request.num_computed,
                s.request.blocks,
            )
            for s in batch
        ]
        completes = [s.completes_prompt for s in batch]
        wanted = [s.request.logit_rows(s.num_tokens) for s in batch]
        logits = paged_forward(
            self.model, self.pool, pack_step(chunks, wanted, self.pool.block_size, self.device)
        )
        self.num_steps += 1
        last_rows, offset, deltas = [], 0, []
        for s, count, done in zip(batch, wanted, completes, strict=True):
            if s.request.wants_prompt_logprobs:
                self._record_prompt_logprobs(s.request, logits[offset : offset + count])
            elif s.request.targets is not None and count:
                self._record_target_logprobs(s.request, logits[offset : offset + count])
            s.request.num_computed += s.num_tokens
            self.num_computed_tokens += s.num_tokens
            self.scheduler.publish(s.request)
            offset += count
            if done and s.request.targets is not None:
                deltas.append(self._finish_scoring(s.request))
            elif done:
                last_rows.append(offset - 1)
        requests = [
            s.request for s, done in zip(batch, completes, strict=True) if done and s.request.targets is None
        ]
        if not requests:
            return deltas
        if len(last_rows) < len(logits):  # some rows were prompt positions (prompt log-probabilities)
            logits = logits[torch.tensor(last_rows, device=logits.device)]
        return deltas + self._sample(requests, logits)

    def _record_target_logprobs(self, request: Request, logits: torch.Tensor) -> None:
        """A scoring request's next target log-probabilities, one per row of ``logits``: the target's
        logit less its row's log-sum-exp (no log-softmax over the whole vocabulary)."""
        assert request.targets is not None
        done = len(request.target_logprobs)
        rows = full_precision(logits)
        targets = torch.tensor(request.targets[done : done + len(rows)], device=logits.device)
        chosen = rows.gather(-1, targets[:, None])[:, 0] - rows.logsumexp(dim=-1)
        request.target_logprobs.extend(chosen.tolist())
        request.greedy = request.greedy and bool((rows.argmax(dim=-1) == targets).all())

    def _record_prompt_logprobs(self, request: Request, logits: torch.Tensor) -> None:
        """Log-probabilities of the prompt tokens that follow this chunk's positions."""
        done = len(request.prompt_logprobs)
        skip = done - request.num_computed  # positions already recorded before a preemption
        targets = request.prompt_ids[done + 1 :][: len(logits) - skip]
        if not targets:
            return
        logprobs = full_precision(logits[skip : skip + len(targets)]).log_softmax(dim=-1)
        chosen = logprobs.gather(-1, torch.tensor(targets, device=logits.device)[:, None])[:, 0].tolist()
        tops = top_alternatives(logprobs, request.params.prompt_logprobs or 0, self.num_tokens)
        request.prompt_logprobs.extend(
            TokenLogprob(t, lp, top) for t, lp, top in zip(targets, chosen, tops, strict=True)
        )

    def _sample(self, requests: list[Request], logits: torch.Tensor) -> list[Delta]:
        scoring = [r for r in requests if r.params.max_new_tokens == 0]
        deltas = [self._finish_scoring(r) for r in scoring]
        if scoring:
            keep = [i for i, r in enumerate(requests) if r.params.max_new_tokens > 0]
            requests, logits = [requests[i] for i in keep], logits[keep]
        if not requests:
            return deltas
        tokens, logprobs = sample_tokens(
            logits,
            [r.params for r in requests],
            [r.generator for r in requests],
            self.num_tokens,
            adjusted=adjust_logits(logits, requests),
        )
        wanted_top = max(r.params.top_logprobs for r in requests)
        tops = (
            top_alternatives(full_precision(logits).log_softmax(dim=-1), wanted_top, self.num_tokens)
            if wanted_top
            else [()] * len(requests)
        )
        for request, token, logprob, top in zip(
            requests, tokens.tolist(), logprobs.tolist(), tops, strict=True
        ):
            first = not request.output_ids
            request.append(token, logprob, top[: request.params.top_logprobs])
            text = (
                request.text_stream.release(final=request.finished) if request.text_stream is not None else ""
            )
            deltas.append(
                Delta(
                    request.request_id,
                    [token],
                    [logprob],
                    text,
                    request.finish_reason,
                    request.stop_reason,
                    top_logprobs=[request.top_logprobs[-1]] if request.params.top_logprobs else [],
                    prompt_logprobs=request.reported_prompt_logprobs if first else None,
                )
            )
            if request.finished:
                self._retire(request)
        return deltas

    def _finish_scoring(self, request: Request) -> Delta:
        """A request that only scores its prompt (``max_new_tokens`` 0) ends once the prompt is computed."""
        request.finish_reason = "length"
        self._retire(request)
        return Delta(
            request.request_id, [], [], "", "length", prompt_logprobs=request.reported_prompt_logprobs
        )

    def _retire(self, request: Request) -> None:
        self.scheduler.finish(request)
        del self._requests[request.request_id]

    def _submit(
        self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams] | None
    ) -> list[Request]:
        if params is None or isinstance(params, SamplingParams):
            params = [params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
        requests = [self.make_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
        for request in requests:
            self.add(request)
        return requests

    def _drain(self, requests: list[Request], progress: bool) -> Iterator[Completion]:
        pending = {r.request_id: r for r in requests}
        try:
            with tqdm(total=len(pending), desc="generating", disable=not progress) as bar:
                while pending:
                    for delta in self.step():
                        if delta.finished and delta.request_id in pending:
                            bar.update()
                            yield Completion.of(pending.pop(delta.request_id))
        finally:
            for request_id in pending:
                self.abort(request_id)

    def iter_generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        progress: bool = False,
    ) -> Iterator[Completion]:
        """Generate for all prompts together; yield each completion as soon as it finishes.

        PPO computes reference log-probs, values and rewards of a rollout as it arrives.
        Closing the iterator early aborts the requests still running.
        """
        return self._drain(self._submit(prompts, params), progress)

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        progress: bool = False,
    ) -> list[Completion]:
        """Completions for ``prompts``, in input order (PPO rollouts, open-ended evaluation)."""
        requests = self._submit(prompts, params)
        done = {c.request_id: c for c in self._drain(requests, progress)}
        return [done[r.request_id] for r in requests]

    def sample(self, prompt: Prompt, params: SamplingParams, n: int) -> list[Completion]:
        """``n`` samples of one prompt, computed from one cached copy of the prompt."""
        requests = self.make_samples(prompt, params, n, f"req-{next(self._ids)}")
        for request in requests:
            self.add(request)
        done = {c.request_id: c for c in self._drain(requests, progress=False)}
        return [done[r.request_id] for r in requests]

    def make_scoring_request(self, context: Sequence[int], continuation: Sequence[int]) -> Request:
        """A request that reads ``log p(continuation | context)`` from its prompt's logits and ends."""
        return Request(
            request_id=f"score-{next(self._ids)}",
            prompt_ids=[*context, *continuation[:-1]],
            params=SCORING,
            stop_ids=frozenset(),
            generator=torch.Generator(device=self.device),
            text_stream=None,
            targets=list(continuation),
        )

    def score(self, contexts: Sequence[Prompt], continuations: Sequence[Prompt]) -> list[ContinuationScore]:
        """Log-probabilities of each continuation after its context, in input order.

        Each pair is a scoring request on the paged cache, so pairs share computed prefixes like
        any requests (with prefix caching): the choices of one question compute its context once,
        and items with the same few shots compute the shots once. Submit pairs with the same
        context together (the scheduler holds back a request whose prefix another is computing).
        Equal to :func:`hcx.infer.scoring.score_continuations` up to float rounding (tested).
        """
        pairs = [(self.encode(c), self.encode(x)) for c, x in zip(contexts, continuations, strict=True)]
        check_pairs(pairs, self.model.cfg.max_seq_len)
        for i, (context, continuation) in enumerate(pairs):
            self._check_pool_holds(f"pair {i}", len(context) + len(continuation))
        requests = [self.make_scoring_request(c, x) for c, x in pairs]
        for request in requests:
            self.add(request)
        list(self._drain(requests, progress=False))
        return [
            ContinuationScore(torch.tensor(r.target_logprobs, dtype=torch.float64), r.greedy)
            for r in requests
        ]
