from __future__ import annotations

import numpy as np
import pytest
import torch

from hcx.tokenizer import specials
from hcx.train.fim import FimTokens, fim_restore
from hcx.train.loader import PackedLoader, document_positions
from hcx.train.shards import open_shards, tokenize_corpus


@pytest.fixture(scope="module")
def shards(tmp_path_factory, corpus_glob, tokenizer_dir):
    return open_shards(tokenize_corpus(corpus_glob, tokenizer_dir, tmp_path_factory.mktemp("tokens")))


@pytest.fixture(scope="module")
def ids(tokenizer):
    fim = FimTokens(
        *(tokenizer.token_id(t) for t in (specials.FIM_PREFIX, specials.FIM_SUFFIX, specials.FIM_MIDDLE))
    )
    return tokenizer.token_id(specials.END_OF_TEXT), fim


def make_loader(shards, ids, **kwargs) -> PackedLoader:
    eot, fim = ids
    return PackedLoader(shards, eot, fim, **{"fim_rate": 0.5, "seed": 3, **kwargs})


def test_positions_restart_at_each_document():
    doc_ids = np.array([[4, 4, 5, 5, 5, 6], [7, 7, 7, 7, 8, 8]])
    assert document_positions(doc_ids).tolist() == [[0, 1, 0, 1, 2, 0], [0, 1, 2, 3, 0, 1]]


def test_rows_are_the_packed_stream_with_document_boundaries(shards, ids):
    eot, fim = ids
    loader = make_loader(shards, ids)
    batch = loader.next_batch(batch_size=4, seq_len=96)
    assert batch.inputs.shape == batch.targets.shape == batch.positions.shape == (4, 96)
    assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    starts = batch.positions == 0
    new_doc = torch.ones_like(starts)
    new_doc[:, 1:] = batch.doc_ids[:, 1:] != batch.doc_ids[:, :-1]
    assert torch.equal(starts, new_doc)
    # every document (not cut by a row start) begins with <|endoftext|>
    assert (batch.inputs[starts[:, :] & (torch.arange(96) > 0)] == eot).all()

    # documents come out whole: FIM ones restore to the shard's tokens, the rest are verbatim
    stream = make_loader(shards, ids)
    stream._fill(20_000)
    tokens, docs = stream.buffer, stream.buffer_docs
    n_fim = 0
    for doc_id in range(10):
        seq = tokens[docs == doc_id]
        original = shards.document(int(stream._order[doc_id]))
        body = seq[1:]
        if body[0] == fim.prefix:
            n_fim += 1
            body = fim_restore(body, fim)
        assert seq[0] == eot and np.array_equal(body, original)
    assert 0 < n_fim < 10


def test_each_rank_gets_its_rows_of_the_same_global_batch(shards, ids):
    whole = make_loader(shards, ids).next_batch(4, 64)
    halves = [make_loader(shards, ids).next_batch(4, 64, rank=r, world=2) for r in range(2)]
    assert torch.equal(torch.cat([h.inputs for h in halves]), whole.inputs)
    assert torch.equal(torch.cat([h.positions for h in halves]), whole.positions)
    with pytest.raises(ValueError, match="not divisible"):
        make_loader(shards, ids).next_batch(3, 64, rank=0, world=2)


def test_state_dict_resumes_the_stream_exactly_and_repacks(shards, ids):
    a = make_loader(shards, ids)
    a.next_batch(4, 64)
    state = a.state_dict()
    expected = [a.next_batch(2, 256) for _ in range(3)]  # longer rows after a "context switch"
    b = make_loader(shards, ids)
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch(2, 256)
        assert torch.equal(got.inputs, want.inputs) and torch.equal(got.doc_ids, want.doc_ids)


def test_fim_rate_is_respected(shards, ids):
    _, fim = ids
    loader = make_loader(shards, ids, fim_rate=0.5, spm_rate=0.5)
    kinds = {"ar": 0, "psm": 0, "spm": 0}
    for index in range(400):
        seq = loader.document_sequence(index, epoch=0)
        if seq[1] != fim.prefix:
            kinds["ar"] += 1
        else:
            kinds["spm" if seq[2] == fim.suffix else "psm"] += 1
    assert 150 < kinds["ar"] < 250 and kinds["psm"] > 50 and kinds["spm"] > 50
    none = make_loader(shards, ids, fim_rate=0.0)
    assert all(none.document_sequence(i, 0)[1] != fim.prefix for i in range(100))


def test_epochs_reshuffle(shards, ids):
    loader = make_loader(shards, ids)
    first = loader._order.copy()
    loader.cursor = len(first)
    loader._fill(len(loader.buffer) + 1)
    assert loader.epoch == 1 and not np.array_equal(loader._order, first)
