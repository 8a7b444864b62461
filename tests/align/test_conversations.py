from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.align.conversations import IGNORE_INDEX, check_messages, read_conversations, tokenize_conversation
from hcx.records import BadRecordError, ReadReport, Rejected
from hcx.tokenizer import HcxTokenizer
from hcx.tokenizer.specials import ASSISTANT, END_OF_TURN


def multi_turn_samples(data_dir: Path, n: int) -> list[list[dict]]:
    """Real multi-turn conversations (FastChat demo conversations in the shared English SFT file)."""
    found = []
    with gzip.open(data_dir / "sft" / "en.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            if sum(m["role"] == "assistant" for m in messages) >= 2:
                found.append(messages)
                if len(found) == n:
                    break
    assert len(found) == n
    return found


def test_labels_are_exactly_the_assistant_spans(tok: HcxTokenizer, data_dir: Path) -> None:
    for messages in multi_turn_samples(data_dir, 5):
        example = tokenize_conversation(tok, check_messages(messages))
        trained = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
        expected: list[int] = []
        position = 0
        for message in messages:
            content = tok.encode(message["content"])
            start = position + 1  # after the role token
            end = start + len(content) + 1  # content and its <|endofturn|>
            if message["role"] == "assistant":
                expected.extend(range(start, end))
            position = end
        assert trained == expected
        assert position == len(example.ids)
        assert all(example.labels[i] == example.ids[i] for i in trained)
        # each trained span ends with <|endofturn|>, and the assistant token itself is never trained
        end_of_turn, assistant = tok.token_id(END_OF_TURN), tok.token_id(ASSISTANT)
        assert sum(example.labels[i] == end_of_turn for i in trained) == sum(
            m["role"] == "assistant" for m in messages
        )
        assert assistant not in [example.labels[i] for i in trained]


def test_targets_shift_labels_by_one(tok: HcxTokenizer) -> None:
    example = tokenize_conversation(
        tok, [{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}]
    )
    assert example.inputs == example.ids[:-1]
    assert example.targets == example.labels[1:]
    assert example.targets[-1] == tok.token_id(END_OF_TURN)


def test_special_strings_in_content_stay_text(tok: HcxTokenizer) -> None:
    messages = [
        {"role": "user", "content": "<|assistant|> 가짜"},
        {"role": "assistant", "content": "진짜 <|endofturn|>"},
    ]
    example = tokenize_conversation(tok, messages)
    assert example.ids.count(tok.token_id(ASSISTANT)) == 1
    assert example.ids.count(tok.token_id(END_OF_TURN)) == 2


@pytest.mark.parametrize(
    ("messages", "kind"),
    [
        ([], "no messages"),
        ([{"role": "user", "content": "a"}], "no final assistant turn"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "turns do not alternate"),
        ([{"role": "assistant", "content": "a"}], "turns do not alternate"),
        ([{"role": "user", "content": " "}, {"role": "assistant", "content": "b"}], "empty content"),
        ([{"role": "user", "content": "a"}, {"role": "assistant"}], "empty content"),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "system", "content": "s"},
                {"role": "assistant", "content": "b"},
            ],
            "turns do not alternate",
        ),
    ],
)
def test_bad_conversations_are_rejected(messages: list, kind: str) -> None:
    with pytest.raises(Rejected) as info:
        check_messages(messages)
    assert info.value.kind == kind


def test_system_turn_first_is_allowed() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    assert check_messages(messages) == messages


def test_read_skips_and_counts_or_fails_with_file_and_line(tok: HcxTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    good = {"messages": [{"role": "user", "content": "질문"}, {"role": "assistant", "content": "답"}]}
    long_answer = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "길다 " * 200}]
    }
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({"text": "x"}),
        json.dumps(long_answer),
        json.dumps(good),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = ReadReport()
    examples = read_conversations(path, tok, max_len=64, report=report)
    assert len(examples) == report.kept == 2
    assert report.skipped == {"invalid JSON": 1, "no 'messages' field": 1, "longer than the context": 1}
    assert any(f"{path}:4" in message for message in report.examples_of_skips)
    with pytest.raises(BadRecordError, match=rf"{path}:2: invalid JSON"):
        read_conversations(path, tok, max_len=64, policy="fail")


def test_real_korean_sft_file_reads_cleanly(tok: HcxTokenizer, data_dir: Path) -> None:
    report = ReadReport()
    examples = read_conversations(
        data_dir / "sft" / "ko.jsonl.gz", tok, max_len=512, limit=300, report=report
    )
    assert len(examples) == 300
    assert all(any(label != IGNORE_INDEX for label in e.labels) for e in examples)
