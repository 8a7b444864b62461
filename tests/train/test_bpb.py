"""Bits per byte against a hand computation from the model's own forward."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hcx.data.held_out import language_texts
from hcx.model import ModelConfig, Transformer
from hcx.tokenizer.hf_tokenizer import HfTokenizer
from hcx.train.bpb import HeldOutBpb, bits_per_byte, text_bits_per_byte

BOS = 0


@pytest.fixture(scope="module")
def model() -> Transformer:
    model = Transformer(ModelConfig(preset="tiny", vocab_size=4096, n_layers=2, max_seq_len=32))
    model.init_weights(seed=7)
    return model.eval()


def by_hand(model: Transformer, docs: list[list[int]], n_bytes: int) -> float:
    """Every token of each document predicted from at most max_seq_len - 1 tokens before it, the
    first window's from BOS on, later windows' from the document's preceding tokens."""
    window = model.cfg.max_seq_len - 1
    nats = 0.0
    for doc in docs:
        for start in range(0, len(doc), window):
            context = [BOS] if start == 0 else doc[:start]
            piece = doc[start : start + window]
            inputs = (context + piece)[-(window + 1) :][:-1]
            with torch.no_grad():
                logprobs = model(torch.tensor([inputs]))[0].double().log_softmax(-1)
            offset = len(inputs) - len(piece)
            nats -= sum(logprobs[offset + i, token].item() for i, token in enumerate(piece))
    return nats / math.log(2) / n_bytes


def test_matches_the_hand_computation_across_batches_and_windows(model):
    generator = torch.Generator().manual_seed(0)
    docs = [torch.randint(1, 4096, (n,), generator=generator).tolist() for n in (1, 5, 31, 32, 75)]
    got = bits_per_byte(model, docs, n_bytes=987, bos_id=BOS, max_batch_tokens=64)
    assert got == pytest.approx(by_hand(model, docs, 987), rel=1e-6)


def test_text_version_counts_utf8_bytes(model, tok):
    texts = ["한국어는 교착어이다.", "Bits per byte do not depend on the tokenizer."]
    ids = [tok.encode(text) for text in texts]
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert n_bytes > sum(map(len, texts))
    want = bits_per_byte(model, ids, n_bytes, bos_id=BOS)
    assert text_bits_per_byte(model, tok.encode, texts, bos_id=BOS) == pytest.approx(want, rel=1e-12)


def test_a_short_text_by_hand_with_two_tokenizers(model, tok, data_dir):
    """Σ −log₂ p(token) over UTF-8 bytes, token by token, for hcx's tokenizer and Polyglot-Ko's."""
    text = "서울은 한국의 수도이다. Seoul is the capital."
    polyglot = HfTokenizer(data_dir / "tokenizers" / "polyglot-ko-30k")
    results = {}
    for name, encode in (("hcx", tok.encode), ("polyglot", polyglot.encode)):
        ids = [i % 4096 for i in encode(text)]  # the test model has 4,096 rows
        assert len(ids) < model.cfg.max_seq_len
        with torch.no_grad():
            logprobs = model(torch.tensor([[BOS, *ids]]))[0, :-1].double().log_softmax(-1)
        bits = -sum(logprobs[i, token].item() for i, token in enumerate(ids)) / math.log(2)
        results[name] = (len(ids), bits / len(text.encode("utf-8")))
        got = bits_per_byte(model, [ids], len(text.encode("utf-8")), bos_id=BOS)
        assert got == pytest.approx(results[name][1], rel=1e-5)
    assert results["hcx"][0] != results["polyglot"][0]  # two different segmentations


def test_held_out_bpb_scores_each_language_after_the_tokenizer_bos(model, tok, data_dir):
    held_out = HeldOutBpb(["ko", "en"], tok, max_bytes=2_000, data_dir=data_dir)
    got = held_out(model)
    assert set(got) == {"bpb/ko", "bpb/en"}
    for language in ("ko", "en"):
        texts = language_texts(language, 2_000, data_dir)
        want = text_bits_per_byte(model, tok.encode, texts, bos_id=tok.bos_id)
        assert got[f"bpb/{language}"] == pytest.approx(want, rel=1e-9)


def test_runs_in_the_model_dtype(model):
    docs = [list(range(1, 40)), list(range(100, 120))]
    full = bits_per_byte(model, docs, 200, bos_id=BOS)
    half = bits_per_byte(copy.deepcopy(model).to(torch.bfloat16), docs, 200, bos_id=BOS)
    assert half == pytest.approx(full, rel=0.02)


def test_refuses_an_empty_byte_count(model):
    with pytest.raises(ValueError, match="n_bytes"):
        bits_per_byte(model, [[1, 2]], 0, bos_id=BOS)
