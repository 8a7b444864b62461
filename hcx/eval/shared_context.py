"""Scoring the choices of one question with one pass over their shared context (SPEC §6 closed-ended).

A multiple-choice item asks for ``log p(choice | context)`` for every choice after the same
context, and the context is most of the tokens (few-shot prompts). lm-eval's ``hf`` backend
shares the context only when every choice is a single token; here the context always runs
once: single-token choices read the next-token distribution after it, longer choices run
their own tokens on top of the context's cached keys and values, all choices as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hcx.infer.scoring import length_batches
from hcx.model import CachedCausal, KVCache, Transformer


@torch.no_grad()
def next_token_logprobs(
    model: Transformer, contexts: Sequence[Sequence[int]], max_batch_tokens: int
) -> list[Tensor]:
    """Log-probabilities over the vocabulary after each context (length-sorted, right-padded batches)."""
    lengths = [len(c) for c in contexts]
    device = model.rope_cos.device
    out: list[Tensor | None] = [None] * len(contexts)
    for batch in length_batches(lengths, max_batch_tokens):
        tokens = torch.zeros(len(batch), lengths[batch[0]], dtype=torch.long)
        for row, i in enumerate(batch):
            tokens[row, : lengths[i]] = torch.tensor(contexts[i])
        hidden = model(tokens.to(device), hidden=True)
        last = hidden[torch.arange(len(batch)), torch.tensor([lengths[i] - 1 for i in batch])]
        logprobs = model.output(last).float().log_softmax(dim=-1).cpu()
        for row, i in enumerate(batch):
            out[i] = logprobs[row]
    return out  # type: ignore[return-value]


@torch.no_grad()
def score_choices(
    model: Transformer, context: Sequence[int], continuations: Sequence[Sequence[int]]
) -> list[tuple[float, bool]]:
    """``(log p(continuation | context), greedy)`` for each continuation, the context run once."""
    device = model.rope_cos.device
    width = max(len(c) for c in continuations) - 1
    cache = KVCache(model.cfg, 1, len(context) + width, device, model.tok_embeddings.weight.dtype)
    prefix = torch.tensor([list(context)], device=device)
    hidden = model(prefix, attention=CachedCausal(cache, len(context)), hidden=True)[:, -1]
    first = model.output(hidden).float().log_softmax(dim=-1)[0]
    rows = [[first[c[0]]] for c in continuations]
    greedy = [int(first.argmax()) == c[0] for c in continuations]
    if width > 0:
        n = len(continuations)
        cache.expand(n)
        tokens = torch.zeros(n, width, dtype=torch.long)
        for row, c in enumerate(continuations):
            tokens[row, : len(c) - 1] = torch.tensor(list(c[:-1]))
        hidden = model(tokens.to(device), attention=CachedCausal(cache, width), hidden=True)
        later = model.output(hidden).float().log_softmax(dim=-1)
        for row, c in enumerate(continuations):
            targets = torch.tensor(list(c[1:]), device=device)
            steps = later[row, : len(c) - 1]
            rows[row].extend(steps.gather(-1, targets[:, None])[:, 0])
            greedy[row] = greedy[row] and bool((steps.argmax(dim=-1) == targets).all())
    return [(float(sum(r)), g) for r, g in zip(rows, greedy, strict=True)]
