"""Batched scoring: log-probabilities of given continuations after given contexts.

This is the closed-ended evaluation of SPEC §6 (score each candidate answer by likelihood)
and the reference-policy pass of PPO (SPEC §5.3). Pairs are sorted by length and packed
into right-padded batches of at most ``max_batch_tokens`` padded tokens; with a causal
model the padding after a sequence cannot change its logits, so each pair is scored
exactly as it would be alone. Logits are computed only at the continuation positions,
so the vocabulary projection does not run over the contexts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hcx.model.transformer import Transformer


@dataclass(frozen=True)
class ContinuationScore:
    """Per-token log-probabilities of a continuation and whether greedy decoding yields it."""

    logprobs: Tensor
    greedy: bool

    @property
    def total(self) -> float:
        return float(self.logprobs.sum())


def length_batches(lengths: list[int], max_batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest first into batches of at most ``max_batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and lengths[batches[-1][0]] * (len(batches[-1]) + 1) <= max_batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def check_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], limit: int) -> None:
    """Refuse a pair with an empty side or more tokens than the model's context ``limit``."""
    for i, (context, continuation) in enumerate(pairs):
        if not context or not continuation:
            raise ValueError(f"pair {i}: context and continuation must each have at least one token")
        if len(context) + len(continuation) > limit:
            raise ValueError(
                f"pair {i}: {len(context) + len(continuation)} tokens exceed the context {limit}"
            )


@torch.no_grad()
def score_continuations(
    model: Transformer,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    max_batch_tokens: int = 4096,
) -> list[ContinuationScore]:
    """``log p(continuation | context)`` token by token, for each pair, in input order."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    check_pairs(list(zip(contexts, continuations, strict=True)), model.cfg.max_seq_len)
    device = model.rope_cos.device
    lengths = [len(c) + len(x) for c, x in zip(contexts, continuations, strict=True)]
    scores: list[ContinuationScore | None] = [None] * len(contexts)
    for batch in length_batches(lengths, max_batch_tokens):
        tokens = torch.zeros(len(batch), lengths[batch[0]], dtype=torch.long)
        rows, cols, targets = [], [], []
        for row, i in enumerate(batch):
            sequence = [*contexts[i], *continuations[i]]
            tokens[row, : len(sequence)] = torch.tensor(sequence)
            start = len(contexts[i]) - 1
            rows += [row] * len(continuations[i])
            cols += range(start, start + len(continuations[i]))
            targets += continuations[i]
        hidden = model(tokens.to(device), hidden=True)
        logits = model.output(hidden[torch.tensor(rows), torch.tensor(cols)])
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        targets_t = torch.tensor(targets, device=device)
        logprobs = logits.log_softmax(dim=-1).gather(-1, targets_t[:, None])[:, 0]
        hits = logits.argmax(dim=-1) == targets_t
        offset = 0
        for i in batch:
            n = len(continuations[i])
            scores[i] = ContinuationScore(
                logprobs[offset : offset + n], bool(hits[offset : offset + n].all())
            )
            offset += n
    return scores  # type: ignore[return-value]
