from __future__ import annotations

from pathlib import Path

import pytest

from hcx.tokenizer.corpus import read_documents
from hcx.tokenizer.morphemes import MorphemeSplitter, split_at, surface_boundaries
from hcx.tokenizer.pretokenize import split_words


@pytest.fixture(scope="module")
def splitter() -> MorphemeSplitter:
    return MorphemeSplitter(num_workers=2)


def test_overlapping_and_empty_spans_do_not_cut_inside_a_morpheme():
    # 붙여 → 붙이 [0,2) + 어 [1,2): 1 lies inside 붙이, so no cut.
    assert surface_boundaries([(0, 2), (1, 2)], 2) == []
    # 했다 → 하 [0,1) + 었 [0,1) + 다 [1,2)
    assert surface_boundaries([(0, 1), (0, 1), (1, 2)], 2) == [1]
    # A zero-length morpheme at 2 still marks a cut that no span crosses.
    assert surface_boundaries([(0, 2), (2, 2), (2, 4)], 4) == [2]
    assert split_at("형태소를", [3]) == ["형태소", "를"]


@pytest.mark.parametrize(
    ("word", "pieces"),
    [
        (" 형태소를", [" 형태소", "를"]),
        ("붙여", ["붙여"]),
        (" 했다", [" 했", "다"]),
        (" 갔어요", [" 갔", "어요"]),
        (" GPT는", [" GPT", "는"]),
        (" tokenizer", [" tokenizer"]),
        ("123", ["123"]),
    ],
)
def test_words_are_cut_at_kiwi_surface_boundaries(splitter, word, pieces):
    assert splitter.split_many([word])[word] == pieces


def test_pieces_spell_every_real_korean_word(splitter, data_dir: Path):
    docs = read_documents(data_dir / "pretrain" / "ko.jsonl.gz")
    words = {w for _, text in zip(range(300), docs, strict=False) for w in split_words(text)}
    split = splitter.split_many(words)
    assert set(split) == words
    assert all("".join(pieces) == word for word, pieces in split.items())
    assert sum(len(p) > 1 for p in split.values()) > len(words) / 4, "Korean words should mostly be cut"


def test_join_grammatical_keeps_stems_apart_but_joins_suffix_chains():
    joined = MorphemeSplitter(num_workers=2, join_grammatical=True)
    strict = MorphemeSplitter(num_workers=2)
    words = [" 있었다", " 형태소를", " 학교에서는"]
    assert strict.split_many(words)[" 있었다"] == [" 있", "었", "다"]
    split = joined.split_many(words)
    assert split[" 있었다"] == [" 있", "었다"]
    assert split[" 형태소를"] == [" 형태소", "를"]
    assert split[" 학교에서는"] == [" 학교", "에서는"]
