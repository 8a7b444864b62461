"""Bits per byte on held-out text: a language-modelling loss that does not depend on the tokenizer.

    bpb = Σ_tokens −log₂ p(token | preceding tokens) / Σ_documents UTF-8 bytes

Loss per token rewards a tokenizer that cuts text finely; loss per byte does not, so it compares
a model before and after vocabulary extension (:mod:`hcx.model.extend`) on the same text. Each
document is scored after ``bos_id`` so that its first token is predicted as well; a document
longer than the model's context is scored in consecutive windows, each after ``bos_id``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from hcx.model.transformer import Transformer


def _windows(docs_ids: Sequence[Sequence[int]], window: int, bos_id: int) -> list[list[int]]:
    return [[bos_id, *ids[i : i + window]] for ids in docs_ids for i in range(0, len(ids), window)]


@torch.no_grad()
def bits_per_byte(
    model: Transformer,
    docs_ids: Sequence[Sequence[int]],
    n_bytes: int,
    *,
    bos_id: int,
    max_batch_tokens: int = 4096,
) -> float:
    """Bits per byte of documents given as token ids, ``n_bytes`` being their UTF-8 size.

    Windows are sorted by length and right-padded into batches of at most ``max_batch_tokens``
    (padding after a causal sequence cannot change its logits); the model runs in its own dtype
    on its own device, the log-softmax in float32 at the scored positions only.
    """
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    device = model.rope_cos.device
    pieces = sorted(_windows(docs_ids, model.cfg.max_seq_len - 1, bos_id), key=len, reverse=True)
    pieces = [p for p in pieces if len(p) > 1]
    nats = 0.0
    start = 0
    while start < len(pieces):
        width = len(pieces[start])
        batch = pieces[start : start + max(1, max_batch_tokens // width)]
        start += len(batch)
        tokens = torch.full((len(batch), width), bos_id, dtype=torch.long)
        scored = torch.zeros(len(batch), width - 1, dtype=torch.bool)
        for row, piece in enumerate(batch):
            tokens[row, : len(piece)] = torch.tensor(piece)
            scored[row, : len(piece) - 1] = True
        tokens, scored = tokens.to(device), scored.to(device)
        hidden = model(tokens[:, :-1], hidden=True)[scored]
        logprobs = model.output(hidden).float().log_softmax(dim=-1)
        nats -= logprobs.gather(-1, tokens[:, 1:][scored][:, None]).sum().item()
    return nats / math.log(2) / n_bytes


def text_bits_per_byte(
    model: Transformer,
    encode: Callable[[str], list[int]],
    texts: Sequence[str],
    *,
    bos_id: int,
    max_batch_tokens: int = 4096,
) -> float:
    """:func:`bits_per_byte` of ``texts`` as ``encode`` tokenizes them."""
    n_bytes = sum(len(text.encode("utf-8")) for text in texts)
    return bits_per_byte(
        model, [encode(text) for text in texts], n_bytes, bos_id=bos_id, max_batch_tokens=max_batch_tokens
    )
