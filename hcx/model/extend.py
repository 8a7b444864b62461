"""Embedding rows for the tokens ``hcx tokenizer extend`` appended (EEVE-Korean, arXiv 2402.14714).

Each new token's input row and output row start as the **mean** of the base model's rows of the
sub-tokens the base tokenizer spells it with (its token string run through the base BPE alone,
so SentencePiece-style ``▁`` and byte fallback are respected and no prefix space is added).
Why the mean: the input row lands inside the region of embedding space the layers were trained
on, near what the model saw for the same text before, instead of in a random direction (EEVE-Korean
initialises its new input rows this way). On the output side the new token's logit starts as the
mean of its pieces' logits, and by Jensen ``exp(mean) <= mean(exp)``, so no new token can take more
probability than its pieces already had on average: the old distribution is disturbed, not
overturned. ``init="random"`` (normal with the model's ``init_std``) is the control that measures
what the mean buys.

Rows of existing tokens are never written, so on text the base tokenizer already covered the
logits of every old token are exactly the base model's (the softmax changes only through the new
tokens' logits). A model whose row count exceeds its tokenizer (a vocabulary padded to a
multiple of 64) gives those spare rows to new tokens before growing; the grown size is padded
to a multiple of 64 again, and rows that belong to no token start as the mean of the old rows.
Tied embeddings stay one matrix. This module does not own the tokenizer extension
(:mod:`hcx.tokenizer.extend`) nor the export format (:mod:`hcx.model.hf`).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer
from torch import Tensor, nn

from hcx.model.config import padded_vocab_size
from hcx.model.transformer import Transformer

Init = Literal["mean", "random"]


@dataclass(frozen=True)
class GrownEmbeddings:
    """What :func:`extend_embeddings` did: rows before and after, and each new id's sub-token ids."""

    rows_before: int
    rows_after: int
    reused_rows: int
    init: Init
    sub_tokens: dict[int, list[int]]


def spell_new_tokens(base: Tokenizer, extended: Tokenizer) -> dict[int, list[int]]:
    """New id → the base ids that spell that token; refuses an extension that moved an old token."""
    old = base.get_vocab(with_added_tokens=True)
    new = extended.get_vocab(with_added_tokens=True)
    moved = [token for token, i in old.items() if new.get(token) != i]
    if moved:
        raise ValueError(
            f"{len(moved)} base tokens have another id in the extended tokenizer, e.g. {moved[:3]}"
        )
    spelled = {}
    for token, i in sorted(new.items(), key=lambda item: item[1]):
        if token in old:
            continue
        ids = [t.id for t in base.model.tokenize(token)]
        if not ids:
            raise ValueError(f"the base tokenizer cannot spell new token {token!r} (id {i})")
        spelled[i] = ids
    return spelled


def _new_rows(
    weight: Tensor, sub_tokens: Mapping[int, list[int]], init: Init, std: float, seed: int
) -> Tensor:
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(len(sub_tokens), weight.shape[1], generator=generator) * std
    return torch.stack([weight[ids].float().mean(dim=0) for ids in sub_tokens.values()])


def _grown(
    weight: Tensor, rows: int, sub_tokens: Mapping[int, list[int]], init: Init, std: float, seed: int
) -> nn.Parameter:
    old = weight.detach()
    grown = old.float().mean(dim=0).expand(rows, -1).clone()
    grown[: old.shape[0]] = old.float()[:rows]
    if sub_tokens:
        grown[list(sub_tokens)] = _new_rows(old, sub_tokens, init, std, seed)
    return nn.Parameter(grown.to(old.dtype).to(old.device), requires_grad=weight.requires_grad)


@torch.no_grad()
def extend_embeddings(
    model: Transformer,
    sub_tokens: Mapping[int, list[int]],
    vocab_size: int,
    init: Init = "mean",
    seed: int = 0,
) -> GrownEmbeddings:
    """Give ``model`` rows for an extended vocabulary of ``vocab_size`` tokens, in place."""
    if model.tok_embeddings is None or model.output is None:
        raise ValueError("only a whole decoder (embeddings and output head) can be extended")
    before = model.cfg.vocab_size
    rows = max(before, padded_vocab_size(vocab_size))
    sub_tokens = dict(sorted(sub_tokens.items()))
    if any(i >= vocab_size for i in sub_tokens):
        raise ValueError(f"new token ids must be below vocab_size {vocab_size}")
    std = model.cfg.init_std
    model.tok_embeddings.weight = _grown(model.tok_embeddings.weight, rows, sub_tokens, init, std, seed)
    model.tok_embeddings.num_embeddings = rows
    if model.cfg.tie_embeddings:
        model.output.weight = model.tok_embeddings.weight
    else:
        model.output.weight = _grown(model.output.weight, rows, sub_tokens, init, std, seed + 1)
    model.output.out_features = rows
    model.cfg = model.cfg.model_copy(update={"vocab_size": rows})
    reused = sum(1 for i in sub_tokens if i < before)
    return GrownEmbeddings(before, rows, reused, init, sub_tokens)


def grow_for_tokenizer(
    model: Transformer,
    base_tokenizer: str | Path,
    extended_tokenizer: str | Path,
    init: Init = "mean",
    seed: int = 0,
) -> GrownEmbeddings:
    """:func:`extend_embeddings` for the tokens ``extended_tokenizer`` adds to ``base_tokenizer``
    (directories or ``tokenizer.json`` files), in place."""
    from hcx.tokenizer.extend import tokenizer_file

    base = Tokenizer.from_file(str(tokenizer_file(base_tokenizer)))
    extended = Tokenizer.from_file(str(tokenizer_file(extended_tokenizer)))
    return extend_embeddings(model, spell_new_tokens(base, extended), extended.get_vocab_size(), init, seed)


def extend_model(
    model_path: str | Path,
    extended_tokenizer: str | Path,
    out_dir: str | Path,
    *,
    base_tokenizer: str | Path | None = None,
    init: Init = "mean",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> GrownEmbeddings:
    """Load a model (Hugging Face directory or hcx checkpoint), grow its embeddings for
    ``extended_tokenizer`` and export it with that tokenizer to ``out_dir``.

    ``base_tokenizer`` defaults to the model's own tokenizer directory.
    """
    from hcx.model.hf import export_hf
    from hcx.model.load import load_model
    from hcx.tokenizer.extend import EXTENSION_FILE, tokenizer_file

    loaded = load_model(model_path, device="cpu", dtype=dtype)
    grown = grow_for_tokenizer(
        loaded.model, base_tokenizer or loaded.tokenizer_dir, extended_tokenizer, init, seed
    )
    tokenizer_dir = tokenizer_file(extended_tokenizer).parent
    export_hf(loaded.model, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype)
    if (tokenizer_dir / EXTENSION_FILE).is_file():
        shutil.copy2(tokenizer_dir / EXTENSION_FILE, Path(out_dir) / EXTENSION_FILE)
    return grown
