"""The layout of one engine step: many sequences' new tokens packed over a paged KV cache.

One scheduler step packs the new tokens of every scheduled sequence into one row: decode
steps (one token each) and prefill chunks (many tokens) side by side, so the linear layers
(projections, MLP, output) run once on all of them without padding. Only attention is per
sequence: each sequence's queries attend to its own cached keys, gathered from its blocks.
Sequences are gathered in groups: decoding (one query) apart from prefilling (several), so
a long prefill chunk does not pad the decoding sequences' queries, and within each kind by
context length, so a short sequence is not padded to the longest context in the step.

The forward itself is the model's one forward (:meth:`hcx.model.transformer.Transformer.forward`)
with a :class:`hcx.model.attention.PagedKV` context built here; this module only lays out
tokens, positions, cache slots and attention groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from hcx.infer.kv_pool import BlockPool
from hcx.model.attention import PagedGroup, PagedKV
from hcx.model.transformer import Transformer


@dataclass(frozen=True)
class SequenceChunk:
    """New tokens of one sequence in this step: they sit at positions ``start, start+1, ...``."""

    token_ids: Sequence[int]
    start: int
    blocks: Sequence[int]


@dataclass
class PackedStep:
    tokens: Tensor  # (N,)
    positions: Tensor  # (N,)
    slots: Tensor  # (N,) where each new token's key and value are written
    groups: list[PagedGroup]
    logits_index: Tensor  # packed indices whose logits are wanted


def _group(chunks: list[SequenceChunk], offsets: list[int], block_size: int, device) -> PagedGroup:
    lengths = [len(c.token_ids) for c in chunks]
    T = max(lengths)
    L = max(c.start + n for c, n in zip(chunks, lengths, strict=True))
    steps = torch.arange(T)
    query_pos = torch.tensor([c.start for c in chunks])[:, None] + steps
    query_valid = steps[None] < torch.tensor(lengths)[:, None]
    query_index = torch.where(query_valid, torch.tensor(offsets)[:, None] + steps, 0)
    query_pos = torch.where(query_valid, query_pos, 0)
    max_blocks = -(-L // block_size)
    tables = torch.zeros(len(chunks), max_blocks, dtype=torch.long)
    for i, c in enumerate(chunks):
        used = min(len(c.blocks), max_blocks)
        tables[i, :used] = torch.tensor(c.blocks[:used])
    key_pos = torch.arange(L)
    key_slots = tables[:, key_pos // block_size] * block_size + key_pos % block_size
    mask = (key_pos[None, None] <= query_pos[:, :, None])[:, None]
    return PagedGroup(
        query_index=query_index.to(device),
        query_valid=None if bool(query_valid.all()) else query_valid.to(device),
        key_slots=key_slots.to(device),
        mask=mask.to(device),
    )


def group_by_context_length(
    members: list[int], chunks: Sequence[SequenceChunk], slack: float = 1.5, free_padding: int = 2048
) -> list[list[int]]:
    """Split sequences into groups of similar context length, shortest first.

    Every sequence of a group is padded to the group's longest context, and gathering the
    padding costs as much as gathering real keys. A sequence opens a new group when adding
    it would pad the group past ``slack`` times its real keys (and past ``free_padding``
    keys, below which one more attention call costs more than the padding it saves).
    """
    context = {i: chunks[i].start + len(chunks[i].token_ids) for i in members}
    groups: list[list[int]] = []
    real = 0
    for i in sorted(members, key=context.__getitem__):
        padded = (len(groups[-1]) + 1) * context[i] if groups else 0
        if groups and padded <= max(slack * (real + context[i]), free_padding):
            groups[-1].append(i)
            real += context[i]
        else:
            groups.append([i])
            real = context[i]
    return groups


def pack_step(
    chunks: Sequence[SequenceChunk],
    logits_for: Sequence[int],
    block_size: int,
    device=None,
    free_padding: int = 2048,
) -> PackedStep:
    """Lay out one step; ``logits_for[i]`` asks for the logits of chunk i's last that many tokens
    (``True``/1: the last, which samples; all of them: prompt log-probabilities).

    Each chunk's ``blocks`` must already cover positions up to ``start + len(token_ids)``.
    ``free_padding``: see :func:`group_by_context_length`.
    """
    tokens, positions, slots, offsets, wanted = [], [], [], [], []
    for chunk, want in zip(chunks, logits_for, strict=True):
        offsets.append(len(tokens))
        for i, token in enumerate(chunk.token_ids):
            pos = chunk.start + i
            tokens.append(token)
            positions.append(pos)
            slots.append(chunk.blocks[pos // block_size] * block_size + pos % block_size)
        wanted.extend(range(len(tokens) - int(want), len(tokens)))
    decoding = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1]
    prefilling = [i for i, c in enumerate(chunks) if len(c.token_ids) > 1]
    groups = [
        _group([chunks[i] for i in members], [offsets[i] for i in members], block_size, device)
        for kind in (decoding, prefilling)
        for members in group_by_context_length(kind, chunks, free_padding=free_padding)
    ]
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
    return PackedStep(as_tensor(tokens), as_tensor(positions), as_tensor(slots), groups, as_tensor(wanted))


@torch.no_grad()
def paged_forward(model: Transformer, pool: BlockPool, step: PackedStep) -> Tensor:
    """Write the step's keys/values into ``pool`` and return logits (len(logits_index), vocab)."""
    if model.tok_embeddings is None or model.output is None or model.norm is None:
        raise ValueError("the engine needs a whole model, not a pipeline stage")
    context = PagedKV(step.positions, step.slots, step.groups, pool.keys, pool.values)
    hidden = model(step.tokens[None], attention=context, hidden=True)
    return model.output(hidden[0, step.logits_index])
