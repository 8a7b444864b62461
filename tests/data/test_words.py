"""Word segmentation for filter statistics: Kiwi morphemes for Korean, Unicode words elsewhere."""

from __future__ import annotations

import pickle

from hcx.data.words import KiwiWordTokenizer, UnicodeWordTokenizer, word_tokenizer_for


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


def test_cjk_characters_are_words_and_punctuation_is_not():
    words = UnicodeWordTokenizer().word_tokenize("東京は日本の首都です。Hello, world 2024!")
    assert words == ["東", "京", "は", "日", "本", "の", "首", "都", "で", "す", "Hello", "world", "2024"]


def test_one_shared_tokenizer_per_language():
    assert word_tokenizer_for("en") is word_tokenizer_for("en")
    assert isinstance(word_tokenizer_for("de"), UnicodeWordTokenizer)
