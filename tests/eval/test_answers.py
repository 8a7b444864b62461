"""The answer rates of ``eval.answers`` on hand-made answers, and a clear error for a bad prompt file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hcx.eval.answers import (
    Answer,
    answer_rates,
    hangul_share,
    in_language,
    read_held_out_prompts,
    repeated_ngram_rate,
)


def answer(language: str, text: str, ids: list[int], ended: bool = True) -> Answer:
    return Answer(language, "prompt", text, ids, ended)


def test_rates_of_hand_made_answers():
    answers = [
        answer("ko", "서울은 봄에 따뜻하고 벚꽃이 핍니다.", [1, 2, 3, 4, 5, 6]),
        answer("ko", "It is warm in spring.", [7, 8, 9, 10, 11], ended=False),  # wrong language, cut off
        answer("en", "Spring in Seoul is mild.", [12, 13, 14, 15]),
        answer("en", "", []),  # empty
        answer("en", "la la la la la la", [20, 21, 20, 21, 20, 21, 20, 21]),  # looping
    ]
    rates = answer_rates(answers)
    assert rates["in_language"] == pytest.approx(3 / 5)  # the looping English one counts as English
    assert rates["ended"] == pytest.approx(4 / 5)
    assert rates["non_empty"] == pytest.approx(4 / 5)
    # the looping answer: 5 four-grams, 2 distinct -> 3/5 repeated; the others 0
    assert rates["repeated_4grams"] == pytest.approx((3 / 5) / 5)
    assert rates["mean_tokens"] == pytest.approx((6 + 5 + 4 + 0 + 8) / 5)
    assert rates["distinct"] == 1.0
    same = [answer("ko", "그런 사람이에요.", [1, 2])] * 7 + [answer("ko", "네.", [3])] * 3
    assert answer_rates(same)["distinct"] == pytest.approx(2 / 10)


def test_language_of_mixed_text():
    assert hangul_share("abc") == 0.0 and hangul_share("가나") == 1.0 and hangul_share("123 !") is None
    assert hangul_share("GPU 가속") == pytest.approx(2 / 5)
    assert in_language("GPU를 쓰면 빨라집니다", "ko") and not in_language("GPU를 쓰면 빨라집니다", "en")
    assert not in_language("...", "ko") and not in_language("...", "en")
    assert repeated_ngram_rate([1, 2, 3]) == 0.0 and repeated_ngram_rate([5] * 10) == pytest.approx(6 / 7)


def test_a_bad_prompt_file_names_the_line(tmp_path: Path):
    path = tmp_path / "held_out_prompts.jsonl"
    path.write_text('{"language": "ko", "prompt_ids": [1, 2]}\n{"language": "en"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"held_out_prompts.jsonl:2: not a \{language, prompt_ids\} record"):
        read_held_out_prompts(path, 10)
    with pytest.raises(FileNotFoundError, match="the SFT stage writes them"):
        read_held_out_prompts(tmp_path / "missing.jsonl", 10)


def test_the_pipeline_summary_shows_rates_and_answers_side_by_side(tmp_path: Path):
    from rich.console import Console

    from hcx.eval.answers import RATES
    from hcx.pipeline.report import print_answers

    def asked(language: str, prompt: str, text: str) -> dict:
        return {"language": language, "prompt": prompt, "text": text, "token_ids": [1], "ended": True}

    rates = {name: dict.fromkeys(RATES, 0.5) for name in ("sft", "ppo")}
    answers = {
        "sft": [asked("ko", "안녕?", "안녕하세요."), asked("en", "Hi?", "Hello.")],
        "ppo": [asked("ko", "안녕?", "반가워요."), asked("en", "Hi?", "")],
    }
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"prompts": 2, "rates": rates, "answers": answers}), encoding="utf-8")
    console = Console(record=True, width=120)
    print_answers(console, path)
    text = console.export_text()
    assert "2 held-out" in text and all(rate in text for rate in RATES)
    assert "sft: 안녕하세요." in text and "ppo: 반가워요." in text and "ppo: (empty)" in text
