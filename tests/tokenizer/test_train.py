from __future__ import annotations

import json
from pathlib import Path

from hcx.tokenizer import load
from hcx.tokenizer.corpus import select_documents
from hcx.tokenizer.morphemes import MorphemeSplitter, has_hangul
from hcx.tokenizer.pretokenize import split_words
from hcx.tokenizer.specials import SPECIAL_TOKENS
from tests.tokenizer.conftest import HELD_OUT, SLICE_BYTES, VOCAB_SIZE, pretrain_files


def test_saved_directory_has_hf_files_and_specials_first(tokenizer_dir: Path, tok):
    names = {p.name for p in tokenizer_dir.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert tok.vocab_size == VOCAB_SIZE
    assert [tok.token_id(s) for s in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    for special in ("<|user|>", "<|assistant|>", "<|endofturn|>", "<|system|>"):
        assert special in config["chat_template"]
    assert not list(tokenizer_dir.parent.glob(".*tmp*")), "staging directory left behind"


def _korean_training_pieces(data_dir: Path) -> set[bytes]:
    words = {
        word
        for path in pretrain_files(data_dir)
        for text in select_documents(path, held_out=False, fraction=HELD_OUT, max_bytes=SLICE_BYTES)
        for word in split_words(text)
        if has_hangul(word)
    }
    pieces = MorphemeSplitter(num_workers=2).split_many(words)
    return {p.encode() for parts in pieces.values() for p in parts}


def _tokens_outside_pieces(tokenizer_dir: Path, pieces: set[bytes]) -> list[str]:
    """Hangul tokens that occur in no morpheme piece of the training words, i.e. span a boundary."""
    tokenizer = load(tokenizer_dir)
    hangul_tokens = [
        raw
        for i in range(len(SPECIAL_TOKENS), tokenizer.vocab_size)
        if has_hangul((raw := tokenizer.decode_bytes([i])).decode("utf-8", "ignore"))
    ]
    longest = max(map(len, hangul_tokens))
    substrings = {
        p[a:b] for p in pieces for a in range(len(p)) for b in range(a + 1, min(len(p), a + longest) + 1)
    }
    return [t.decode("utf-8", "replace") for t in hangul_tokens if t not in substrings]


def test_no_korean_token_spans_a_morpheme_boundary(tokenizer_dir: Path, ablation_dir: Path, data_dir: Path):
    pieces = _korean_training_pieces(data_dir)
    assert _tokens_outside_pieces(tokenizer_dir, pieces) == []
    # The unconstrained ablation, trained on the same text, does learn such tokens ("형태소를").
    assert len(_tokens_outside_pieces(ablation_dir, pieces)) > 10
