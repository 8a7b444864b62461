"""Word segmentation for filter statistics: Kiwi morphemes for Korean, Unicode words elsewhere."""

from __future__ import annotations

import pickle
import re

from hcx.data.words import KiwiWordTokenizer, UnicodeWordTokenizer, word_tokenizer_for

from .conftest import real_record


def kiwi_words_one_eojeol_at_a_time(kiwi, text: str) -> list[str]:
    """The reference: Kiwi on each eojeol alone, no cache, punctuation-only pieces dropped last."""
    words = []
    for eojeol in text.split():
        if re.search("[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]", eojeol):
            pieces, end = [], 0
            for token in kiwi.tokenize(eojeol):
                if token.start >= end:
                    pieces.append(eojeol[token.start : token.end])
                    end = token.end
        else:
            pieces = re.findall(
                r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+",
                eojeol,
            )
        words += [p for p in pieces or [eojeol] if any(ch.isalnum() for ch in p)]
    return words


def test_korean_words_are_kiwi_morphemes_not_eojeols():
    words = word_tokenizer_for("ko").word_tokenize("한국어는 형태소를 붙여 단어를 만든다.")
    assert words[:4] == ["한국어", "는", "형태소", "를"]
    assert "단어" in words and "를" in words
    assert "." not in words
    assert len(words) > len(["한국어는", "형태소를", "붙여", "단어를", "만든다."])


def test_contracted_morphemes_count_once():
    assert word_tokenizer_for("ko").word_tokenize("했다") == ["했", "다"]


def test_kiwi_cache_gives_the_same_words_as_an_empty_cache():
    text = "서울은 대한민국의 수도이다. 서울의 인구는 약 천만 명이다."
    tokenizer = word_tokenizer_for("ko")
    tokenizer.word_tokenize("서울은 크다")
    warm = tokenizer.word_tokenize(text)
    tokenizer._cache.clear()
    assert tokenizer.word_tokenize(text) == warm


def test_cached_words_equal_kiwi_on_each_eojeol_of_real_text(data_dir):
    """Korean with digits, Latin, brackets, quotes and ranges (1989년, (폭력행위...)으로, 18일~20일)."""
    tokenizer = KiwiWordTokenizer()
    tokenizer._kiwi = word_tokenizer_for("ko").kiwi
    for record_id in ("KorQuAD_v1.0_dev.json:임종석#0", "KorQuAD_v1.0_dev.json:임종석#1"):
        text = real_record(data_dir, "ko", "korquad_v1_dev_contexts", record_id)["text"][:600]
        expected = kiwi_words_one_eojeol_at_a_time(tokenizer.kiwi, text)
        assert tokenizer.word_tokenize(text) == expected
        assert tokenizer.word_tokenize(text) == expected  # now from the cache


def test_kiwi_cache_is_bounded():
    tokenizer = word_tokenizer_for("ko")
    small = KiwiWordTokenizer(cache_size=3)
    small._kiwi = tokenizer.kiwi
    assert small.word_tokenize("하나 둘 셋 넷 다섯") == tokenizer.word_tokenize("하나 둘 셋 넷 다섯")
    assert len(small._cache) <= 5


def test_kiwi_tokenizer_pickles_without_its_model_or_cache():
    tokenizer = word_tokenizer_for("ko")
    tokenizer.word_tokenize("모델을 불러온다")
    clone = pickle.loads(pickle.dumps(tokenizer))
    assert clone._kiwi is None and clone._cache == {}
    assert (clone.model_type, clone.cache_size) == (tokenizer.model_type, tokenizer.cache_size)
    assert pickle.loads(pickle.dumps(KiwiWordTokenizer(multi_words=True))).multi_words


def test_multi_word_dictionary_only_joins_names_written_without_spaces():
    """Off by default: per eojeol, Kiwi's multi-word names (SKY 캐슬) can only match their
    space-less spellings; the rest of the analysis is the same."""
    plain = word_tokenizer_for("ko")
    with_names = KiwiWordTokenizer(multi_words=True)
    assert not plain.multi_words and with_names.kiwi is not plain.kiwi
    assert plain.word_tokenize("'SKY캐슬'") == ["SKY", "캐슬"]
    assert with_names.word_tokenize("'SKY캐슬'") == ["SKY캐슬"]
    text = "한국어는 형태소를 붙여 단어를 만든다. 서울의 인구는 약 천만 명이다."
    assert with_names.word_tokenize(text) == plain.word_tokenize(text)


def test_cjk_characters_are_words_and_punctuation_is_not():
    words = UnicodeWordTokenizer().word_tokenize("東京は日本の首都です。Hello, world 2024!")
    assert words == ["東", "京", "は", "日", "本", "の", "首", "都", "で", "す", "Hello", "world", "2024"]


def test_one_shared_tokenizer_per_language():
    assert word_tokenizer_for("en") is word_tokenizer_for("en")
    assert isinstance(word_tokenizer_for("de"), UnicodeWordTokenizer)
