"""Incremental detokenization with Hugging Face tokenizers: streamed text equals decoding all ids at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hcx.infer.text import TextStream
from hcx.tokenizer import load
from tests.tokenizer.hf_chat_dirs import chatml_polyglot_dir, conversations, mistral_dir


@pytest.fixture(scope="module")
def tokenizers(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("hf")
    return {
        "mistral": load(mistral_dir(data_dir, out / "mistral")),
        "polyglot": load(chatml_polyglot_dir(data_dir, out / "polyglot")),
    }


@pytest.fixture(scope="module")
def answers(data_dir: Path) -> list[str]:
    rows = conversations(data_dir, "ko", every=200) + conversations(data_dir, "en", every=100)
    return [m["content"] for row in rows for m in row if m["role"] == "assistant"]


@pytest.mark.parametrize("name", ["mistral", "polyglot"])
def test_streamed_text_equals_the_whole_decode(tokenizers, answers, name) -> None:
    tokenizer = tokenizers[name]
    for answer in answers:
        ids = tokenizer.encode(" " + answer)  # as a reply follows its prompt
        stream, streamed = TextStream(tokenizer), ""
        for token in ids:
            stream.push(token)
            assert "\ufffd" not in stream.text
            streamed += stream.release()
        stream.finish()
        streamed += stream.release(final=True)
        assert streamed == stream.text == tokenizer.decode(ids)


@pytest.mark.parametrize("name", ["mistral", "polyglot"])
def test_streamed_text_stops_where_the_whole_decode_has_the_stop_string(tokenizers, answers, name) -> None:
    """Stop strings of Korean text, Hangul syllables split across byte-level tokens included: what is
    released never shows U+FFFD or text past the stop, and adds up to the whole decode cut there."""
    tokenizer = tokenizers[name]
    stopped = 0
    for answer in answers:
        ids = tokenizer.encode(" " + answer)
        whole = tokenizer.decode(ids)
        stop = whole[len(whole) // 2 : len(whole) // 2 + 3]
        if not stop.strip():
            continue
        cut = whole[: whole.index(stop)]
        stream, released = TextStream(tokenizer, stop=[stop, "\n\n\n\n"]), ""
        for token in ids:
            hit = stream.push(token)
            piece = stream.release(final=hit)
            assert "\ufffd" not in piece
            released += piece
            assert cut.startswith(released)
            if hit:
                break
        assert stream.stopped_by == stop and released == stream.text == cut
        stopped += 1
    assert stopped >= len(answers) // 2


def test_metaspace_tokens_keep_their_spaces(tokenizers) -> None:
    """Decoded one by one, Mistral's ``▁word`` tokens lose their space; the stream keeps it."""
    tokenizer = tokenizers["mistral"]
    ids = tokenizer.encode("The weather is nice today. 오늘은 날씨가 좋네요.")
    assert "".join(tokenizer.decode([i]) for i in ids) != tokenizer.decode(ids)
    stream = TextStream(tokenizer, stop=["좋네"])
    for token in ids:
        if stream.push(token):
            break
    assert stream.text == "The weather is nice today. 오늘은 날씨가 " and stream.stopped_by == "좋네"
