"""Packed rows of real Korean documents: every mask-free path of ``DocumentCausal`` against the dense mask.

Rows are built by the SFT packer (:func:`hcx.align.batching.collate_packed`): each document keeps its
own positions and document id, its targets are its own next tokens, and the row's tail is padding
with target -100, so nothing is learned across a document boundary. The layouts cover a row that is
one document, a row of many 1-3 token documents, and rows of documents whose lengths follow the
real Korean texts (long ones cut, a padded tail).
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from hcx.align.batching import collate_packed, make_batches
from hcx.align.conversations import SftExample
from hcx.model import Causal, DocumentCausal, ModelConfig, Transformer
from hcx.model.attention import default_packed_backend, document_segments
from hcx.train.loader import Batch
from hcx.train.pretrain import lm_loss

ROW_KINDS = ("mixed", "single", "tiny", "mixed")
MAX_SEQ_LEN = 512


def make_model() -> Transformer:
    """A float32 tiny decoder of two layers, seeded: the same weights on every call."""
    model = Transformer(ModelConfig(preset="tiny", vocab_size=4096, n_layers=2, max_seq_len=MAX_SEQ_LEN))
    model.init_weights(seed=0)
    return model


@pytest.fixture(scope="module")
def korean_docs(tokenizer, korean_texts) -> list[list[int]]:
    """Token ids of the real Korean texts (a few hundred of 250-2,500 tokens, most of 7-50)."""
    return [ids for ids in tokenizer.encode_batch(korean_texts) if len(ids) >= 2]


def document(ids: list[int], inputs: int) -> SftExample:
    """A real document cut to ``inputs`` input tokens (``inputs + 1`` ids), every next token trained."""
    ids = ids[: inputs + 1]
    return SftExample(ids=ids, labels=ids)


def packed_row(kind: str, seq_len: int, docs: list[list[int]], rng: random.Random) -> list[SftExample]:
    """Documents of one row: ``single`` fills it, ``tiny`` packs 1-3 token documents, ``mixed`` real lengths."""
    long_docs = [d for d in docs if len(d) > seq_len]
    if kind == "single":
        return [document(rng.choice(long_docs), seq_len)]
    row: list[SftExample] = []
    room = seq_len
    while room > 0:
        source = rng.choice(docs)
        if kind == "tiny":
            n = min(rng.randint(1, 3), room, len(source) - 1)
        elif room < seq_len // 8:
            break  # the row ends in padding
        else:
            n = min(len(source) - 1, room, seq_len // 2)
        row.append(document(source, n))
        room -= n
    return row


def packed_batch(docs: list[list[int]], seq_len: int, rows: int, seed: int = 0) -> Batch:
    rng = random.Random(seed)
    layouts = [packed_row(ROW_KINDS[r % len(ROW_KINDS)], seq_len, docs, rng) for r in range(rows)]
    return collate_packed(layouts, seq_len, pad_id=0)


def forward(model: Transformer, batch: Batch, backend: str) -> torch.Tensor:
    attention = DocumentCausal(batch.doc_ids, batch.positions, backend=backend)
    return model(batch.inputs, attention=attention)


def test_rows_cover_the_layouts_the_tests_claim(korean_docs):
    batch = packed_batch(korean_docs, 257, 4)
    counts = [len({int(d) for d in row if d >= 0}) for row in batch.doc_ids]
    assert counts[1] == 1 and bool((batch.doc_ids[1] == 0).all())  # one document, the whole row
    assert counts[2] > 80  # 1-3 token documents
    assert counts[0] >= 2 and counts[3] >= 2
    lengths = [n for _, n in document_segments(batch.doc_ids)]
    assert min(lengths) == 1 and max(lengths) == 257 and len(set(lengths)) > 5


@pytest.mark.parametrize(("seq_len", "rows"), [(64, 1), (64, 4), (257, 3), (512, 2)])
def test_segments_equal_dense_mask_logits_and_gradients(korean_docs, seq_len, rows):
    """Per-document causal SDPA gives the dense-mask logits and, after a backward of the same loss,
    the same gradient on every parameter (float32: max abs difference ≤ 1e-5, and ≤ 1e-5 of the
    parameter's largest gradient, since the gradients of this tiny model are ~1e-4)."""
    batch = packed_batch(korean_docs, seq_len, rows, seed=seq_len)
    results = {}
    for backend in ("dense", "segments"):
        model = make_model().train()
        logits = forward(model, batch, backend)
        lm_loss(logits, batch.targets).backward()
        grads = {name: p.grad for name, p in model.named_parameters()}
        results[backend] = (logits.detach(), grads)
    (dense_logits, dense_grads), (seg_logits, seg_grads) = results["dense"], results["segments"]
    assert (seg_logits - dense_logits).abs().max() <= 1e-5 * max(1.0, dense_logits.abs().max())
    assert seg_grads.keys() == dense_grads.keys()
    for name, grad in dense_grads.items():
        assert grad is not None and grad.abs().max() > 0, name
        difference = (seg_grads[name] - grad).abs().max()
        assert difference <= 1e-5 * grad.abs().max(), name


def test_flex_forward_equals_dense_mask(korean_docs):
    """FlexAttention's block mask (compiled; on the CPU forward only) gives the dense-mask logits,
    on a row length that is not a multiple of its 128-token blocks."""
    batch = packed_batch(korean_docs, 257, 3, seed=1)
    model = make_model().eval()
    with torch.no_grad():
        dense = forward(model, batch, "dense")
        flex = forward(model, batch, "flex")
    assert (flex - dense).abs().max() <= 1e-5 * max(1.0, dense.abs().max())


def unpacked_loss(model: Transformer, examples: list[SftExample]) -> torch.Tensor:
    """Token-weighted mean next-token loss of each document run alone from position 0."""
    total, count = torch.zeros(()), 0
    for example in examples:
        inputs = torch.tensor(example.inputs)[None]
        logits = model(inputs, attention=Causal.of_length(inputs.shape[1]))
        targets = torch.tensor(example.targets)
        total = total + F.cross_entropy(logits[0], targets, ignore_index=-100, reduction="sum")
        count += int((targets != -100).sum())
    return total / count


@pytest.mark.parametrize("backend", ["segments", "dense"])
def test_packed_loss_equals_unpacked_loss(korean_docs, backend):
    """The SFT packer's rows: the mean loss over all packed rows equals that of the documents alone."""
    rng = random.Random(7)
    docs = rng.sample(korean_docs, 60) + [d for d in korean_docs if len(d) > 256][:2]
    examples = [document(d, min(len(d) - 1, rng.choice([1, 2, 3, 256]))) for d in docs]
    batches = make_batches(examples, "packed", pad_id=0, max_tokens=3 * 256, seq_len=256)
    assert len(batches) > 1
    model = make_model().eval()
    with torch.no_grad():
        total, count = torch.zeros(()), 0
        for batch in batches:
            logits = forward(model, batch, backend)
            total = total + F.cross_entropy(
                logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="sum"
            )
            count += int((batch.targets != -100).sum())
        alone = unpacked_loss(model, examples)
    assert count == sum(len(e.inputs) for e in examples)
    torch.testing.assert_close(total / count, alone, rtol=1e-5, atol=0)


def test_auto_backend_is_segments_on_cpu_and_bad_names_are_refused(korean_docs):
    batch = packed_batch(korean_docs, 64, 2)
    assert DocumentCausal(batch.doc_ids, batch.positions).backend == "segments"
    assert default_packed_backend(torch.device("cpu")) == "segments"
    assert default_packed_backend(torch.device("cuda")) == "flex"
    with pytest.raises(ValueError, match="unknown packed attention backend 'sparse'"):
        DocumentCausal(batch.doc_ids, batch.positions, backend="sparse")
    model = make_model().eval()
    with torch.no_grad():
        implicit = model(batch.inputs, positions=batch.positions, doc_ids=batch.doc_ids)
        explicit = forward(model, batch, "segments")
    torch.testing.assert_close(implicit, explicit, atol=0, rtol=0)
