"""transformers.AutoTokenizer and the Rust tokenizer.json give the same ids as hcx's fast encoder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from hcx.tokenizer.corpus import select_documents
from tests.tokenizer.conftest import HELD_OUT, LANGUAGES


@pytest.fixture(scope="module")
def auto(tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


@pytest.fixture(scope="module")
def rust(tokenizer_dir: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tokenizer.encode_special_tokens = True
    return tokenizer


@pytest.mark.parametrize("language", LANGUAGES)
def test_auto_tokenizer_matches_on_held_out_documents(tok, auto, data_dir: Path, language: str):
    path = data_dir / "pretrain" / f"{language}.jsonl.gz"
    docs = list(select_documents(path, held_out=True, fraction=HELD_OUT, max_docs=150))
    assert docs
    ours = tok.encode_batch(docs)
    theirs = auto(docs, add_special_tokens=False)["input_ids"]
    assert ours == theirs
    assert [auto.decode(ids) for ids in theirs] == docs
    assert len(auto) == tok.vocab_size


def test_auto_tokenizer_knows_the_specials(tok, auto):
    assert auto.eos_token_id == tok.eot_id
    assert auto.pad_token_id == tok.pad_id
    for special, i in tok.special_tokens.items():
        assert auto.convert_tokens_to_ids(special) == i


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_rust_and_fast_encoders_agree_on_arbitrary_text(tok, rust, text: str):
    assert rust.encode(text, add_special_tokens=False).ids == tok.encode(text)
