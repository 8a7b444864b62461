"""A request's state inside the engine, and what the engine hands back for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from hcx.infer.grammar import GrammarMatcher
from hcx.infer.kv_pool import BlockKey
from hcx.infer.sampling import SamplingParams
from hcx.infer.text import TextStream

FinishReason = Literal["stop", "length", "abort"]
TopLogprobs = tuple[tuple[int, float], ...]
"""The most likely tokens at one position and their log-probabilities, most likely first."""


@dataclass(frozen=True)
class TokenLogprob:
    """A prompt token's log-probability given the tokens before it, and the alternatives."""

    token_id: int
    logprob: float
    top: TopLogprobs = ()


@dataclass(eq=False)
class Request:
    """One prompt being generated. ``tokens`` is the prompt followed by the generated ids.

    ``num_computed`` tokens have their keys/values in the cache (in ``blocks``); the rest
    are computed by the next steps. A preempted request drops its blocks, sets
    ``num_computed`` to 0 and recomputes prompt and output later; its generator keeps its
    state, so what it samples next is unchanged by the preemption.

    ``block_keys`` identify its full blocks by content (prefix caching); its first
    ``num_published`` blocks are published.

    ``parent``: another sample of the same prompt (``n > 1``) whose cached prompt this one
    shares instead of computing it (see :class:`~hcx.infer.scheduler.Scheduler`).

    ``targets`` makes a scoring request (closed-ended evaluation, reference log-probabilities):
    its prompt is a context followed by all but the last target, nothing is generated, and the
    logits of its last ``len(targets)`` positions give ``target_logprobs`` (the log-probability
    of each target after what precedes it) and ``greedy`` (every target is the argmax).
    """

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset[int]
    generator: torch.Generator
    text_stream: TextStream | None
    grammar: GrammarMatcher | None = None
    parent: Request | None = None
    tokens: list[int] = field(init=False)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] = field(default_factory=list)
    num_computed: int = 0
    blocks: list[int] = field(default_factory=list)
    block_keys: list[BlockKey] = field(default_factory=list)
    num_published: int = 0
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    num_preemptions: int = 0
    targets: list[int] | None = None
    target_logprobs: list[float] = field(default_factory=list)
    greedy: bool = True

    def __post_init__(self) -> None:
        self.tokens = list(self.prompt_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.tokens[len(self.prompt_ids) :]

    @property
    def num_pending(self) -> int:
        return len(self.tokens) - self.num_computed

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def reported_prompt_logprobs(self) -> list[TokenLogprob] | None:
        """A copy of the prompt log-probabilities, or None when they were not asked for."""
        return list(self.prompt_logprobs) if self.params.prompt_logprobs is not None else None

    @property
    def first_logits_position(self) -> int:
        """The first position whose logits are still wanted; the keys and values before it may come
        from the prefix cache."""
        if self.targets is None:
            return len(self.tokens) - 1
        return len(self.tokens) - len(self.targets) + len(self.target_logprobs)

    def logit_rows(self, num_tokens: int) -> int:
        """How many of the next ``num_tokens`` computed positions (the last ones) need logits."""
        end = self.num_computed + num_tokens
        if self.wants_prompt_logprobs:
            return num_tokens
        if self.targets is not None:
            return max(0, end - max(self.num_computed, self.first_logits_position))
        return int(end == len(self.tokens))

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt log-probabilities were asked for and are not all computed yet."""
        return (
            self.params.prompt_logprobs is not None and len(self.prompt_logprobs) < len(self.prompt_ids) - 1
        )

    def append(self, token: int, logprob: float, top: TopLogprobs = ()) -> None:
        """Record a sampled token and decide whether the request is done."""
        self.tokens.append(token)
        self.logprobs.append(logprob)
        if self.params.top_logprobs:
            self.top_logprobs.append(top)
        if self.grammar is not None:
            self.grammar.advance(token)
        if token in self.stop_ids:
            self.finish_reason, self.stop_reason = "stop", token
        elif self.text_stream is not None and self.text_stream.push(token):
            self.finish_reason, self.stop_reason = "stop", self.text_stream.stopped_by
        elif len(self.logprobs) >= self.params.max_new_tokens:
            self.finish_reason = "length"
        if self.finished and self.text_stream is not None:
            self.text_stream.finish()


@dataclass(frozen=True)
class Delta:
    """What one request gained in one engine step (the streaming API's unit)."""

    request_id: str
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason | None = None
    stop_reason: str | int | None = None
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class Completion:
    """A finished request (the batch API's unit).

    ``token_ids`` include the stop token when one ended the request (PPO trains on it);
    ``text`` excludes stop tokens and is cut before a stop string.
    """

    request_id: str
    prompt_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    stop_reason: str | int | None = None
    num_preemptions: int = 0
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob] | None = None

    @classmethod
    def of(cls, request: Request) -> Completion:
        assert request.finish_reason is not None
        return cls(
            request_id=request.request_id,
            prompt_ids=list(request.prompt_ids),
            token_ids=request.output_ids,
            logprobs=list(request.logprobs),
            text=request.text_stream.text if request.text_stream is not None else "",
            finish_reason=request.finish_reason,
            stop_reason=request.stop_reason,
            num_preemptions=request.num_preemptions,
            top_logprobs=list(request.top_logprobs),
            prompt_logprobs=request.reported_prompt_logprobs,
        )
