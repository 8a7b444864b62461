"""Stop strings, including ones that span token boundaries, in batch and streaming output."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.sampling import SamplingParams
from hcx.infer.text import TextStream

SENTENCE = "오늘은 날씨가 정말 좋네요. 내일도 맑았으면 좋겠습니다. 그럼 안녕히 계세요."


def pieces(tok, ids: list[int]) -> list[str]:
    """Text each token adds, with the incremental decoder (a split syllable lands on its last token)."""
    stream, out = TextStream(tok), []
    for token in ids:
        before = len(stream.text)
        stream.push(token)
        out.append(stream.text[before:])
    return out


def test_hangul_split_across_tokens_is_held_until_complete(tok):
    ids = tok.encode(SENTENCE)
    assert len(tok.decode_bytes(ids)) > len(ids)
    stream = TextStream(tok)
    for token in ids:
        stream.push(token)
        assert "\ufffd" not in stream.text
    stream.finish()
    assert stream.text == SENTENCE


def test_stop_string_spanning_tokens_cuts_the_text_and_is_never_streamed(tok):
    ids = tok.encode(SENTENCE)
    split = pieces(tok, ids)
    at = SENTENCE.index("맑았으면")
    assert any(at < len("".join(split[:i])) < at + 4 for i in range(1, len(ids))), (
        "the stop string must be cut by a token boundary for this test to mean anything"
    )
    stream = TextStream(tok, stop=["맑았으면", "없는 문자열"])
    released, stopped_at = "", None
    for i, token in enumerate(ids):
        if stream.push(token):
            stopped_at = i
            break
        released += stream.release()
        assert "맑았" not in released
    released += stream.release(final=True)
    assert released == stream.text == SENTENCE[:at]
    assert stream.stopped_by == "맑았으면"
    assert len("".join(split[: stopped_at + 1])) >= at + len("맑았으면") > len("".join(split[:stopped_at]))


def test_engine_stops_on_a_string_across_a_token_boundary(model, tok, korean_prompts):
    prompt = korean_prompts[10]
    free = SamplingParams(temperature=0.0, max_new_tokens=20, stop_token_ids=[])
    reference = Engine(model, tok).generate([prompt], free)[0]
    split = pieces(tok, reference.token_ids)
    ends = [len("".join(split[: i + 1])) for i in range(len(split))]
    text = reference.text
    boundary = next(
        e
        for e in ends[3:]
        if 0 < e < len(text) - 1 and "\ufffd" not in text[e - 1 : e + 2] and text[e - 1 : e + 2].strip()
    )
    stop = text[boundary - 1 : boundary + 2]
    cut = text.index(stop)
    params = free.model_copy(update={"stop": [stop]})
    engine = Engine(model, tok, EngineConfig(max_running=4))
    outputs = engine.generate([prompt, *korean_prompts[11:14]], params)
    output = outputs[0]
    assert output.finish_reason == "stop" and output.stop_reason == stop
    assert output.text == text[:cut]
    last = next(i for i, e in enumerate(ends) if e >= cut + len(stop))
    assert output.token_ids == reference.token_ids[: last + 1]

    streamed, engine = "", Engine(model, tok)
    engine.add_request(prompt, params)
    while engine.has_unfinished():
        for delta in engine.step():
            streamed += delta.text
            assert stop not in streamed
    assert streamed == output.text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_streamed_text_is_the_text_before_the_first_stop_string(tok, korean_answers, data):
    """Any real answer, any stop string cut from it (often across tokens), plus one that never occurs."""
    text = data.draw(st.sampled_from(korean_answers))
    start = data.draw(st.integers(0, len(text) - 1))
    stop = text[start : start + data.draw(st.integers(1, 4))]
    stream, streamed = TextStream(tok, stop=[stop, "§없음§"]), ""
    for token in tok.encode(text):
        if stream.push(token):
            break
        streamed += stream.release()
        assert stop not in streamed
    stream.finish()
    streamed += stream.release(final=True)
    assert streamed == stream.text == text[: text.index(stop)]
    assert stream.stopped_by == stop


@pytest.fixture(scope="module")
def korean_answers(data_dir) -> list[str]:
    with gzip.open(data_dir / "sft" / "ko.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line)["messages"] for line in itertools.islice(f, 0, 3000, 100)]
    return [m[1]["content"] for m in rows]
