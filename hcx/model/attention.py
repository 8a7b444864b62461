"""Attention contexts: which keys each query of the one decoder forward sees, and where they live.

:class:`hcx.model.transformer.Transformer` computes queries, keys and values and hands them
to a context; only the context differs between training, packed training, scoring and the
inference engine (as vLLM swaps attention backends under one model):

- :class:`Causal`: whole sequences from position 0 (SDPA with ``is_causal``: flash-eligible);
- :class:`DocumentCausal`: packed rows of several documents, each token seeing its own
  document only (SPEC §4), without a dense T×T mask: FlexAttention block masks where they
  run (GPU training and inference), or causal SDPA over each document's segment on the CPU,
  whose FlexAttention has no backward; ``backend="dense"`` is the reference the tests use;
- :class:`PagedKV`: the engine's packed step over a paged block pool (:mod:`hcx.infer`).

Every context takes queries (B, T, Hq, D) and keys/values (B, T, Hkv, D) of one layer and
returns (B, T, Hq, D); grouped-query heads are expanded by SDPA itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

PackedBackend = Literal["auto", "flex", "segments", "dense"]


def sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False) -> Tensor:
    """SDPA on (B, T, H, D) tensors."""
    y = F.scaled_dot_product_attention(
        q.transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        attn_mask=mask,
        is_causal=causal,
        enable_gqa=True,
    )
    return y.transpose(1, 2)


class AttentionContext:
    """One forward's attention: rotary ``positions`` (B|1, T) and how a layer attends."""

    positions: Tensor

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        raise NotImplementedError


class Causal(AttentionContext):
    """Every row one sequence from position 0 (right padding, if any, is never seen by real tokens)."""

    def __init__(self, positions: Tensor):
        self.positions = positions

    @classmethod
    def of_length(cls, length: int, device: torch.device | str | None = None) -> Causal:
        return cls(torch.arange(length, device=device)[None])

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return sdpa(q, k, v, causal=True)


def document_causal_mask(doc_ids: Tensor) -> Tensor:
    """(B, 1, T, T) boolean mask: a token sees earlier tokens of its own document only (the reference)."""
    T = doc_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


@dataclass(frozen=True)
class SegmentGroup:
    """Documents of similar length gathered into one padded batch: ``index`` (S, L) into the flat
    (B·T) tokens, right-padded with the segment's own first token; ``valid`` marks real tokens."""

    index: Tensor
    valid: Tensor | None


def document_segments(doc_ids: Tensor) -> list[tuple[int, int]]:
    """(start, length) in the flat (B·T) tokens of every run of equal document ids within a row."""
    B, T = doc_ids.shape
    flat = doc_ids.reshape(-1)
    change = torch.ones(B * T, dtype=torch.bool, device=doc_ids.device)
    change[1:] = flat[1:] != flat[:-1]
    change[::T] = True
    starts = change.nonzero().flatten().tolist()
    ends = [*starts[1:], B * T]
    return [(s, e - s) for s, e in zip(starts, ends, strict=True)]


def group_segments(
    segments: list[tuple[int, int]], device: torch.device, slack: float = 1.25, free_padding: int = 256
) -> list[SegmentGroup]:
    """Batch segments of similar length, longest first, so padding stays under ``slack`` × real tokens.

    One SDPA call per group: a few calls of many short documents each instead of one call per
    document, and no long document padding the short ones.
    """
    order = sorted(segments, key=lambda s: -s[1])
    groups: list[list[tuple[int, int]]] = []
    real = 0
    for seg in order:
        if groups and (len(groups[-1]) + 1) * groups[-1][0][1] <= max(slack * (real + seg[1]), free_padding):
            groups[-1].append(seg)
            real += seg[1]
        else:
            groups.append([seg])
            real = seg[1]
    out = []
    for members in groups:
        width = members[0][1]
        steps = torch.arange(width)
        starts = torch.tensor([s for s, _ in members])[:, None]
        lengths = torch.tensor([n for _, n in members])[:, None]
        valid = steps[None] < lengths
        index = torch.where(valid, starts + steps, starts)
        out.append(SegmentGroup(index.to(device), None if bool(valid.all()) else valid.to(device)))
    return out


@cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def default_packed_backend(device: torch.device) -> PackedBackend:
    """FlexAttention on GPUs; on the CPU per-document segments: its FlexAttention has no backward,
    and even forward-only it measured 1.8-9.8× slower than segments at 2k-32k tokens per row
    (``benchmarks/pretrain_throughput.py --packed``)."""
    return "flex" if device.type == "cuda" else "segments"


class DocumentCausal(AttentionContext):
    """Packed rows: ``doc_ids`` (B, T) name each token's document; positions restart per document."""

    def __init__(self, doc_ids: Tensor, positions: Tensor, backend: PackedBackend = "auto"):
        self.positions = positions
        if backend == "auto":
            backend = default_packed_backend(doc_ids.device)
        self.backend = backend
        B, T = doc_ids.shape
        self.shape = (B, T)
        if backend == "dense":
            self.mask = document_causal_mask(doc_ids)
        elif backend == "flex":
            from torch.nn.attention.flex_attention import create_block_mask

            def same_document(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
                return (doc_ids[b, q] == doc_ids[b, kv]) & (q >= kv)

            # _compile: build the block mask blockwise, never the T×T boolean mask (10 GiB at 32k)
            self.block_mask = create_block_mask(
                same_document, B, None, T, T, device=doc_ids.device, _compile=True
            )
        elif backend == "segments":
            self.groups = group_segments(document_segments(doc_ids), doc_ids.device)
        else:
            raise ValueError(f"unknown packed attention backend {backend!r}")

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.backend == "dense":
            return sdpa(q, k, v, mask=self.mask)
        if self.backend == "flex":
            flex = _compiled_flex()
            y = flex(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                block_mask=self.block_mask,
                enable_gqa=True,
            )
            return y.transpose(1, 2)
        B, T = self.shape
        qf, kf, vf = (t.reshape(B * T, *t.shape[2:]) for t in (q, k, v))
        parts, rows = [], []
        for g in self.groups:
            y = sdpa(qf[g.index], kf[g.index], vf[g.index], causal=True)
            if g.valid is None:
                parts.append(y.flatten(0, 1))
                rows.append(g.index.flatten())
            else:
                parts.append(y[g.valid])
                rows.append(g.index[g.valid])
        out = torch.empty_like(qf).index_copy(0, torch.cat(rows), torch.cat(parts))
        return out.view(B, T, *out.shape[1:])


@dataclass
class PagedGroup:
    """Sequences of one packed step whose attention runs as one padded batch."""

    query_index: Tensor  # (S, T) packed index of each query, padding -> 0
    query_valid: Tensor | None  # (S, T) bool, None when no query is padding
    key_slots: Tensor  # (S, L) cache slot of each key position, padding -> 0
    mask: Tensor | None  # (S, 1, T, L) query may see key; None: causal, every sequence from position 0
    packed_from: int | None = None  # S·T consecutive queries from here, each row T new tokens from 0


class PagedKV(AttentionContext):
    """The engine's step: all new tokens packed in one row (1, N), keys/values in a paged pool.

    Each new token's key and value are written to its ``slots`` entry of the layer's pool
    tensors ``keys[layer]``/``values[layer]`` (slots × Hkv × D); each group of sequences then
    gathers its keys by slot and attends under its own mask.
    """

    def __init__(
        self, positions: Tensor, slots: Tensor, groups: list[PagedGroup], keys: Tensor, values: Tensor
    ):
        self.positions = positions[None]
        self.slots, self.groups, self.keys, self.values = slots, groups, keys, values

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = q[0], k[0], v[0]
        keys, values = self.keys[layer], self.values[layer]
        keys.index_copy_(0, self.slots, k.to(keys.dtype))
        values.index_copy_(0, self.slots, v.to(values.dtype))
        out = torch.empty_like(q)
        for g in self.groups:
            if g.packed_from is not None:  # the step's own keys and values, as views: no gathers
                start, end = g.packed_from, g.packed_from + g.query_index.numel()
                rows = (g.query_index.shape[0], g.query_index.shape[1])
                parts = (t[start:end].view(*rows, *t.shape[1:]) for t in (q, k, v))
                out[start:end] = sdpa(*parts, causal=True).flatten(0, 1)
                continue
            y = sdpa(
                q[g.query_index], keys[g.key_slots], values[g.key_slots], mask=g.mask, causal=g.mask is None
            )
            if g.query_valid is None:
                out[g.query_index.flatten()] = y.flatten(0, 1)
            else:
                out[g.query_index[g.query_valid]] = y[g.query_valid]
        return out[None]
