"""Batching SFT samples so the accelerator computes on tokens, not padding (SPEC §5.1).

Three strategies over the same samples, all returning :class:`hcx.train.loader.Batch`:

- ``padded``: fixed number of samples in random order, padded to the longest (the naive
  baseline of ``benchmarks/sft_batching.py``).
- ``grouped``: samples of similar length form a mini-batch under a fixed token budget
  (``rows × longest ≤ max_tokens``), as the report describes. Lengths are sorted inside
  shuffled pools, so batches stay random while padding stays small.
- ``packed``: samples are packed first-fit-decreasing into rows of ``seq_len`` tokens, with
  positions restarting and a document id per sample so that attention stays inside each
  sample: the loss equals that of the unpacked samples.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

import torch

from hcx.align.conversations import IGNORE_INDEX, SftExample
from hcx.train.loader import Batch

Strategy = Literal["padded", "grouped", "packed"]


def padded_groups(lengths: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def length_grouped(lengths: Sequence[int], max_tokens: int, seed: int, pool: int = 1024) -> list[list[int]]:
    """Index groups whose ``len(group) × longest`` never exceeds ``max_tokens``."""
    too_long = [i for i, n in enumerate(lengths) if n > max_tokens]
    if too_long:
        raise ValueError(
            f"sample {too_long[0]} has {lengths[too_long[0]]} tokens, over max_tokens={max_tokens}"
        )
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    groups: list[list[int]] = []
    for start in range(0, len(order), pool):
        current: list[int] = []
        longest = 0
        for index in sorted(order[start : start + pool], key=lambda i: lengths[i]):
            longest_if_added = max(longest, lengths[index])
            if current and longest_if_added * (len(current) + 1) > max_tokens:
                groups.append(current)
                current, longest_if_added = [], lengths[index]
            current.append(index)
            longest = longest_if_added
        if current:
            groups.append(current)
    rng.shuffle(groups)
    return groups


def similar_length_groups(lengths: Sequence[int], max_tokens: int, overhead: int = 64) -> list[list[int]]:
    """Indices split into groups of similar length with the fewest padded tokens.

    Over the lengths in sorted order, a dynamic programme picks the cut points minimising
    Σ rows × longest (plus ``overhead`` tokens per group: one more forward is not free), with
    every group's ``rows × longest`` within ``max_tokens`` unless a single sequence is longer.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    cost = [0.0] + [math.inf] * n
    cut = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = lengths[order[end - 1]]
        for start in range(end - 1, -1, -1):
            rows = end - start
            if rows > 1 and rows * longest > max_tokens:
                break
            candidate = cost[start] + rows * longest + overhead
            if candidate < cost[end]:
                cost[end], cut[end] = candidate, start
    groups: list[list[int]] = []
    end = n
    while end > 0:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def packed_rows(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """First-fit-decreasing bin packing of samples into rows of at most ``seq_len`` tokens."""
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[index]
        if n > seq_len:
            raise ValueError(f"sample {index} has {n} tokens, over the packed row length {seq_len}")
        row = next((r for r, room in enumerate(free) if room >= n), None)
        if row is None:
            rows.append([index])
            free.append(seq_len - n)
        else:
            rows[row].append(index)
            free[row] -= n
    return rows


def right_pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    """(len(rows), longest row) ids, each row left-aligned and followed by ``value``."""
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def collate_padded(examples: Sequence[SftExample], pad_id: int) -> Batch:
    inputs = right_pad([e.inputs for e in examples], pad_id)
    targets = right_pad([e.targets for e in examples], IGNORE_INDEX)
    width = inputs.shape[1]
    positions = torch.arange(width).expand(len(examples), width).contiguous()
    return Batch(inputs, targets, positions, torch.zeros_like(inputs))


def collate_packed(rows: Sequence[Sequence[SftExample]], seq_len: int, pad_id: int) -> Batch:
    """One row per group; each sample keeps its own positions and document id (padding its own too)."""
    shape = (len(rows), seq_len)
    inputs = torch.full(shape, pad_id, dtype=torch.long)
    targets = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    doc_ids = torch.full(shape, -1, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for d, example in enumerate(row):
            n = len(example.inputs)
            inputs[r, start : start + n] = torch.tensor(example.inputs)
            targets[r, start : start + n] = torch.tensor(example.targets)
            positions[r, start : start + n] = torch.arange(n)
            doc_ids[r, start : start + n] = d
            start += n
        positions[r, start:] = torch.arange(seq_len - start)
    return Batch(inputs, targets, positions, doc_ids)


def make_batches(
    examples: Sequence[SftExample],
    strategy: Strategy,
    pad_id: int,
    max_tokens: int,
    seq_len: int,
    batch_size: int = 8,
    seed: int = 0,
) -> list[Batch]:
    """All batches of one epoch. ``max_tokens`` bounds grouped and packed batches alike."""
    lengths = [len(e.inputs) for e in examples]
    if strategy == "padded":
        return [
            collate_padded([examples[i] for i in g], pad_id) for g in padded_groups(lengths, batch_size, seed)
        ]
    if strategy == "grouped":
        return [
            collate_padded([examples[i] for i in g], pad_id)
            for g in length_grouped(lengths, max_tokens, seed)
        ]
    if strategy == "packed":
        rows = [[examples[i] for i in row] for row in packed_rows(lengths, seq_len)]
        random.Random(seed).shuffle(rows)
        per_batch = max(1, max_tokens // seq_len)
        return [
            collate_packed(rows[i : i + per_batch], seq_len, pad_id) for i in range(0, len(rows), per_batch)
        ]
    raise ValueError(f"unknown batching strategy {strategy!r}; expected padded, grouped or packed")
