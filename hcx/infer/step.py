"""The layout of one engine step: many sequences' new tokens packed over a paged KV cache.

One scheduler step packs the new tokens of every scheduled sequence into one row: decode
steps (one token each) and prefill chunks (many tokens) side by side, so the linear layers
(projections, MLP, output) run once on all of them without padding. Only attention is per
sequence: each sequence's queries attend to its own cached keys, gathered from its blocks.
Sequences are gathered in groups: decoding (one query), prefilling from position 0 and
prefilling after cached keys apart, so a long prefill chunk does not pad the decoding
sequences' queries, and within each kind by size, so a short sequence is not padded to the
longest context or chunk in the step.

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
    # Sequences that all start at position 0 attend causally: SDPA's causal kernel skips the
    # masked half, where an explicit mask costs it about twice as much on the CPU.
    fresh = all(c.start == 0 for c in chunks)
    mask = None if fresh else (key_pos[None, None] <= query_pos[:, :, None])[:, None].to(device)
    consecutive = offsets == list(range(offsets[0], offsets[0] + T * len(chunks), T))
    return PagedGroup(
        query_index=query_index.to(device),
        query_valid=None if bool(query_valid.all()) else query_valid.to(device),
        key_slots=key_slots.to(device),
        mask=mask,
        packed_from=offsets[0] if fresh and consecutive and min(lengths) == T else None,
    )


def group_by_context_length(
    members: list[int], chunks: Sequence[SequenceChunk], slack: float = 1.5, free_padding: int = 2048
) -> list[list[int]]:
    """Split sequences into groups of similar size (context length, then new tokens), smallest first.

    Every sequence of a group is padded to the group's longest context and most new tokens, and
    attention costs as much on padding as on real (query, key) pairs. A sequence opens a new
    group when adding it would pad the group past ``slack`` times its real pairs (and past
    ``free_padding`` pairs, below which one more attention call costs more than the padding it
    saves). For decoding sequences (one query each) the pairs are the keys.
    """
    size = {i: (len(chunks[i].token_ids), chunks[i].start + len(chunks[i].token_ids)) for i in members}
    groups: list[list[int]] = []
    real = queries = keys = 0
    for i in sorted(members, key=lambda i: (size[i][1], size[i][0])):
        t, n = size[i]
        padded = (len(groups[-1]) + 1) * max(queries, t) * max(keys, n) if groups else 0
        if groups and padded <= max(slack * (real + t * n), free_padding):
            groups[-1].append(i)
            real, queries, keys = real + t * n, max(queries, t), max(keys, n)
        else:
            groups.append([i])
            real, queries, keys = t * n, t, n
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
    tokens: list[int] = []
    tables: list[int] = []
    offsets, table_offsets, starts, lengths, wanted = [], [], [], [], []
    for chunk, want in zip(chunks, logits_for, strict=True):
        offsets.append(len(tokens))
        table_offsets.append(len(tables))
        starts.append(chunk.start)
        lengths.append(len(chunk.token_ids))
        tokens.extend(chunk.token_ids)
        tables.extend(chunk.blocks)
        wanted.extend(range(len(tokens) - int(want), len(tokens)))
    each = torch.tensor(lengths)
    positions = torch.arange(len(tokens)) + torch.tensor(starts).sub(torch.tensor(offsets)).repeat_interleave(
        each
    )
    table_rows = torch.tensor(table_offsets).repeat_interleave(each) + positions // block_size
    slots = torch.tensor(tables)[table_rows] * block_size + positions % block_size
    decoding = [i for i, c in enumerate(chunks) if len(c.token_ids) == 1]
    fresh = [i for i, c in enumerate(chunks) if len(c.token_ids) > 1 and c.start == 0]
    continuing = [i for i, c in enumerate(chunks) if len(c.token_ids) > 1 and c.start > 0]
    groups = [
        _group([chunks[i] for i in members], [offsets[i] for i in members], block_size, device)
        for kind in (decoding, fresh, continuing)
        for members in group_by_context_length(kind, chunks, free_padding=free_padding)
    ]
    as_tensor = lambda values: torch.tensor(values, dtype=torch.long, device=device)  # noqa: E731
    return PackedStep(as_tensor(tokens), positions.to(device), slots.to(device), groups, as_tensor(wanted))


@torch.no_grad()
def paged_forward(model: Transformer, pool: BlockPool, step: PackedStep) -> Tensor:
    """Write the step's keys/values into ``pool`` and return logits (len(logits_index), vocab)."""
    if model.tok_embeddings is None or model.output is None or model.norm is None:
        raise ValueError("the engine needs a whole model, not a pipeline stage")
    context = PagedKV(step.positions, step.slots, step.groups, pool.keys, pool.values)
    hidden = model(step.tokens[None], attention=context, hidden=True)
    return model.output(hidden[0, step.logits_index])
