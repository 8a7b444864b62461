"""Special tokens and the chat format (SPEC §2, §5.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hcx.tokenizer.chat import ChatFormatError
from hcx.tokenizer.specials import ASSISTANT, END_OF_TURN, SPECIAL_TOKENS, SYSTEM, USER

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "당신은 친절한 한국어 비서입니다."},
        {"role": "user", "content": "형태소가 뭐예요? <|assistant|> 라고 쓰면?"},
        {"role": "assistant", "content": "뜻을 가진 가장 작은 말의 단위예요.<|endofturn|>"},
        {"role": "user", "content": "고마워요"},
    ]
}


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_strings_in_text_encode_as_text(tok, special: str):
    text = f"사용자가 {special} 를 입력했다"
    ids = tok.encode(text)
    assert not set(ids) & set(range(len(SPECIAL_TOKENS)))
    assert tok.decode(ids) == text


def test_encode_chat_layout_and_assistant_mask(tok):
    chat = tok.encode_chat(CONVERSATION)
    ids, mask = chat.ids, chat.assistant_mask
    specials = [i for i in ids if i < len(SPECIAL_TOKENS)]
    expected = [SYSTEM, END_OF_TURN, USER, END_OF_TURN, ASSISTANT, END_OF_TURN, USER, END_OF_TURN]
    assert specials == [tok.token_id(s) for s in expected], "specials typed in content must stay text"
    assistant_text = CONVERSATION["messages"][2]["content"]
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained == [*tok.encode(assistant_text), tok.end_of_turn_id]
    assert tok.decode(ids).count("<|assistant|>") == 2  # the real turn token and the user's typed string
    prompt = tok.encode_chat(CONVERSATION, add_generation_prompt=True)
    assert prompt.ids == [*ids, tok.token_id(ASSISTANT)]


def test_chat_template_in_transformers_matches_encode_chat(tok, tokenizer_dir: Path):
    auto = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    clean = {
        "messages": [{**m, "content": m["content"].replace("<|", "<")} for m in CONVERSATION["messages"]]
    }
    ours = tok.encode_chat(clean, add_generation_prompt=True)
    rendered = auto.apply_chat_template(clean["messages"], add_generation_prompt=True, tokenize=False)
    assert auto(rendered, add_special_tokens=False)["input_ids"] == ours.ids
    without_prompt = tok.encode_chat(clean)
    out = auto.apply_chat_template(
        clean["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert out["input_ids"] == without_prompt.ids
    assert [bool(m) for m in out["assistant_masks"]] == without_prompt.assistant_mask


@pytest.mark.parametrize(
    ("conversation", "message"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "message 0: role"),
        ({"messages": [{"role": "user", "content": None}]}, "message 0: content"),
        ({"turns": []}, "messages"),
    ],
)
def test_bad_conversations_are_rejected(tok, conversation, message: str):
    with pytest.raises(ChatFormatError, match=message):
        tok.encode_chat(conversation)


def test_unknown_special_token_name(tok):
    with pytest.raises(KeyError, match="not a special token"):
        tok.token_id("<|bos|>")
