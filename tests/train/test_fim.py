from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hcx.tokenizer import specials
from hcx.train.fim import FimTokens, fim_permute, fim_restore, fim_split_points


@pytest.fixture(scope="module")
def fim(tokenizer) -> FimTokens:
    return FimTokens(
        *(tokenizer.token_id(t) for t in (specials.FIM_PREFIX, specials.FIM_SUFFIX, specials.FIM_MIDDLE))
    )


@pytest.mark.parametrize("spm", [False, True])
@pytest.mark.parametrize("split", ["thirds", "random"])
def test_fim_sequences_reconstruct_korean_documents(tokenizer, korean_texts, fim, spm, split):
    rng = np.random.default_rng(0)
    for text in korean_texts[:50]:
        doc = np.asarray(tokenizer.encode(text), dtype=np.int64)
        cuts = fim_split_points(len(doc), split, rng)
        seq = fim_permute(doc, spm, cuts, fim)
        assert len(seq) == len(doc) + 3
        restored = fim_restore(seq, fim)
        assert np.array_equal(restored, doc)
        assert tokenizer.decode(restored.tolist()) == text


def test_psm_and_spm_layouts_use_thirds(fim):
    doc = np.arange(100, 109)
    cuts = fim_split_points(len(doc), "thirds", np.random.default_rng(0))
    assert cuts == (3, 6)
    p, m, s = [100, 101, 102], [103, 104, 105], [106, 107, 108]
    psm = fim_permute(doc, spm=False, cuts=cuts, fim=fim).tolist()
    assert psm == [fim.prefix, *p, fim.suffix, *s, fim.middle, *m]
    spm = fim_permute(doc, spm=True, cuts=cuts, fim=fim).tolist()
    assert spm == [fim.prefix, fim.suffix, *s, fim.middle, *p, *m]


@given(st.lists(st.integers(20, 1000), min_size=0, max_size=40), st.booleans(), st.integers(0, 2**16))
def test_any_cut_restores(tokens, spm, seed):
    fim = FimTokens(prefix=6, suffix=7, middle=8)
    doc = np.asarray(tokens, dtype=np.int64)
    cuts = fim_split_points(len(doc), "random", np.random.default_rng(seed))
    assert 0 <= cuts[0] <= cuts[1] <= len(doc)
    assert np.array_equal(fim_restore(fim_permute(doc, spm, cuts, fim), fim), doc)
