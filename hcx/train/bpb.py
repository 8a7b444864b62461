"""Bits per byte on held-out text: a language-modelling loss that does not depend on the tokenizer.

    bpb = Σ_tokens −log₂ p(token | preceding tokens) / Σ_documents UTF-8 bytes

Loss per token rewards a tokenizer that cuts text finely; loss per byte does not, so it compares
a model before and after vocabulary extension (:mod:`hcx.model.extend`) on the same text. Each
document is scored after ``bos_id`` so that its first token is predicted as well; a document
longer than the model's context is scored in rolling windows of ``max_seq_len - 1`` predictions,
each later one with the document's preceding tokens as context, as lm-eval's
``loglikelihood_rolling`` does (the ``hcx_bpb_*`` tasks measure the same number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hcx.data.held_out import language_texts
from hcx.model.transformer import Transformer


def _windows(docs_ids: Sequence[Sequence[int]], window: int, bos_id: int) -> list[tuple[list[int], int]]:
    """``(tokens, scored)`` pieces: ``tokens[:-1]`` is the input (at most ``window`` positions) and
    the last ``scored`` of ``tokens[1:]`` are the predictions that count."""
    pieces = []
    for ids in docs_ids:
        ids = list(ids)
        done = min(window, len(ids))
        if done:
            pieces.append(([bos_id, *ids[:done]], done))
        while done < len(ids):
            end = min(done + window, len(ids))
            pieces.append((ids[end - window - 1 : end], end - done))
            done = end
    return pieces


@torch.no_grad()
def bits_per_byte(
    model: nn.Module,
    docs_ids: Sequence[Sequence[int]],
    n_bytes: int,
    *,
    bos_id: int,
    max_batch_tokens: int = 4096,
) -> float:
    """Bits per byte of documents given as token ids, ``n_bytes`` being their UTF-8 size.

    Windows are sorted by length and right-padded into batches of at most ``max_batch_tokens``
    (padding after a causal sequence cannot change its logits); the model runs in its own dtype
    (or the caller's autocast) on its own device, the log-softmax in float32 at the scored
    positions only. ``model`` is a :class:`Transformer`, also as training wraps it (FSDP, tensor
    parallel, LoRA): every rank of a mesh calls this with the same documents.
    """
    if n_bytes <= 0:
        raise ValueError(f"n_bytes must be positive, got {n_bytes}")
    device = next(model.parameters()).device
    window = model.cfg.max_seq_len - 1  # as the evaluation backend's max_length
    pieces = sorted(_windows(docs_ids, window, bos_id), key=lambda p: len(p[0]), reverse=True)
    nats = 0.0
    start = 0
    while start < len(pieces):
        width = len(pieces[start][0])
        batch = pieces[start : start + max(1, max_batch_tokens // width)]
        start += len(batch)
        tokens = torch.full((len(batch), width), bos_id, dtype=torch.long)
        scored = torch.zeros(len(batch), width - 1, dtype=torch.bool)
        for row, (piece, count) in enumerate(batch):
            tokens[row, : len(piece)] = torch.tensor(piece)
            scored[row, len(piece) - 1 - count : len(piece) - 1] = True
        tokens, scored = tokens.to(device), scored.to(device)
        logprobs = model(tokens[:, :-1])[scored].float().log_softmax(dim=-1)
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


class HeldOutBpb:
    """Bits per byte of each language's held-out documents, tokenized once for a stage's tokenizer.

    ``bos_id`` (what a document starts with) precedes every scored window, as lm-eval's
    ``loglikelihood_rolling`` does with the evaluation backend's prefix token.
    """

    def __init__(self, languages: Sequence[str], tokenizer: Any, max_bytes: int, data_dir: str | None):
        self.bos_id = tokenizer.bos_id
        self.docs = {}
        for language in languages:
            texts = language_texts(language, max_bytes, data_dir)
            n_bytes = sum(len(text.encode("utf-8")) for text in texts)
            self.docs[language] = ([tokenizer.encode(text) for text in texts], n_bytes)

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return {
            f"bpb/{language}": bits_per_byte(model, ids, n_bytes, bos_id=self.bos_id)
            for language, (ids, n_bytes) in self.docs.items()
        }
