"""decode(encode(x)) == x for real text of every language and for arbitrary Unicode (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hcx.tokenizer.corpus import read_documents
from tests.tokenizer.conftest import LANGUAGES


@pytest.mark.parametrize("language", LANGUAGES)
def test_real_documents_round_trip(tok, data_dir: Path, language: str):
    docs = [
        d
        for _, d in zip(
            range(200), read_documents(data_dir / "pretrain" / f"{language}.jsonl.gz"), strict=False
        )
    ]
    batch = tok.encode_batch(docs)
    assert batch == [tok.encode(d) for d in docs]
    assert [tok.decode(ids) for ids in batch] == docs
    assert all(0 <= i < tok.vocab_size for ids in batch for i in ids)


# Hangul syllables, conjoining jamo (U+1100-11FF) and compatibility jamo, emoji with ZWJ and
# skin tones, combining marks, controls, every kind of whitespace, other scripts.
_PIECES = st.sampled_from(
    [
        "한국어",
        "형태소를",
        "붙여",
        "\u1100\u1161\u11a8",
        "\u1112\u1161\u11ab",
        "ㄱㅏ",
        "👩‍👩‍👧",
        "👍🏽",
        "🇰🇷",
        "e\u0301",
        "\u0000",
        "\x07",
        "\x1b[0m",
        "\r\n",
        "\t\t",
        "   ",
        "\u3000",
        "\u00a0",
        "\u2028",
        "\u200b",
        "日本語",
        "中文",
        "Ünïcödé",
        "<|user|>",
        "<|endoftext|>",
        "0123456789",
        "def f(x):\n    return x",
    ]
)
_MIXED = st.lists(st.one_of(_PIECES, st.text(max_size=8)), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_arbitrary_unicode_round_trips(tok, text: str):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(_MIXED)
def test_mixed_scripts_emoji_jamo_controls_round_trip(tok, text: str):
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "가" * 100_000,
        " " * 50_000 + "끝",
        "\n" * 20_000,
        "9" * 30_000,
        ("한국어 tokenizer 日本語 👍🏽 \t\r\n" * 5_000),
    ],
    ids=["syllable-run", "space-run", "newline-run", "digit-run", "mixed-long"],
)
def test_very_long_inputs_round_trip(tok, text: str):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert len(ids) <= len(text.encode())
