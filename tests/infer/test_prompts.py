"""Prompts from SFT files: real user turns, and a clear error naming the bad line."""

from __future__ import annotations

import json

import pytest

from hcx.infer.prompts import chat_prompt_ids, read_user_turns


def test_reads_every_nth_user_turn_of_the_shared_korean_sft(data_dir, tok):
    every_first = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=6)
    every_third = read_user_turns(data_dir / "sft" / "ko.jsonl.gz", limit=2, every=3)
    assert every_third == [every_first[0], every_first[3]]
    [ids] = chat_prompt_ids(tok, every_first[:1])
    assert ids[0] == tok.token_id("<|user|>") and ids[-1] == tok.token_id("<|assistant|>")
    assert every_first[0] in tok.decode(ids)


def test_a_line_without_a_user_turn_is_named(tmp_path):
    path = tmp_path / "prompts.jsonl"
    good = {"messages": [{"role": "user", "content": "안녕하세요"}]}
    path.write_text(json.dumps(good, ensure_ascii=False) + "\n" + '{"messages": [{"role": "assistant"}]}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: not a conversation with a user turn"):
        read_user_turns(path, limit=5)
