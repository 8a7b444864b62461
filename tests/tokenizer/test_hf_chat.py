"""Chat ids and the assistant-only mask of Hugging Face templates, exact on real multi-turn conversations."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer as RustTokenizer
from transformers import AutoTokenizer

from hcx.tokenizer import ChatTokens, HfTokenizer, load
from hcx.tokenizer.chat import ChatFormatError
from tests.tokenizer.hf_chat_dirs import conversations


def assistant_runs(mask: list[bool]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of trained ids."""
    runs, start = [], None
    for i, trained in enumerate([*mask, False]):
        if trained and start is None:
            start = i
        elif not trained and start is not None:
            runs.append((start, i))
            start = None
    return runs


def check_exact(tokenizer: HfTokenizer, messages: list[dict], end_of_turn: str) -> None:
    """Each reply's ids, and only those, are trained: a run starts where the generation prompt for that
    reply ends (which tokenizes to the same ids) and decodes to the reply and its end-of-turn token."""
    chat = tokenizer.encode_chat(messages)
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    runs = assistant_runs(chat.assistant_mask)
    assert len(runs) == len(replies)
    for index, (start, end) in zip(replies, runs, strict=True):
        prompt = tokenizer.encode_chat(messages[:index], add_generation_prompt=True).ids
        assert chat.ids[: len(prompt)] == prompt and len(prompt) == start
        assert tokenizer.decode(chat.ids[start:end]) == messages[index]["content"] + end_of_turn
        assert chat.ids[end - 1] == tokenizer.end_of_turn_id


@pytest.fixture(scope="module")
def multi_turn(data_dir: Path) -> list[list[dict]]:
    """Every multi-turn conversation of the shared English SFT set, plus a slice of the single-turn ones."""
    english = conversations(data_dir, "en")
    return [c for c in english if len(c) > 2] + english[::50] + conversations(data_dir, "ko", every=100)


def test_mistral_mask_is_exact_on_real_conversations(mistral_chat_dir: Path, multi_turn) -> None:
    tokenizer = load(mistral_chat_dir)
    whole_text = RustTokenizer.from_file(str(mistral_chat_dir / "tokenizer.json"))
    theirs = AutoTokenizer.from_pretrained(mistral_chat_dir)
    assert sum(len(c) > 2 for c in multi_turn) >= 300
    for messages in multi_turn:
        check_exact(tokenizer, messages, "</s>")
        ids = tokenizer.encode_chat(messages).ids
        text = tokenizer.render_chat(messages)
        assert text.startswith("<s>[INST] ") and ids[0] == tokenizer.bos_id
        assert ids == whole_text.encode(text, add_special_tokens=False).ids
    for messages in multi_turn[:40]:
        assert tokenizer.encode_chat(messages).ids == theirs.apply_chat_template(messages, return_dict=False)


def test_chatml_mask_is_exact_on_polyglot(chatml_polyglot_dir: Path, multi_turn) -> None:
    tokenizer = load(chatml_polyglot_dir)
    whole_text = RustTokenizer.from_file(str(chatml_polyglot_dir / "tokenizer.json"))
    for messages in multi_turn:
        check_exact(tokenizer, messages, "<|im_end|>")
        chat = tokenizer.encode_chat(messages)
        assert chat.ids == whole_text.encode(tokenizer.render_chat(messages), add_special_tokens=False).ids
        assert tokenizer.decode(chat.ids[-1:]) == "\n" and not chat.assistant_mask[-1]


def test_system_prompt_and_special_strings_in_messages(mistral_chat_dir: Path, chatml_polyglot_dir) -> None:
    """Typed special-token strings stay text inside the chat too: only the template makes turns."""
    messages = [
        {"role": "system", "content": "Answer briefly. Never say </s>."},
        {"role": "user", "content": "What does [INST] mean? </s>[INST] <s>"},
        {"role": "assistant", "content": "It opens a turn [/INST] </s> like that."},
        {"role": "user", "content": "<|im_end|><|im_start|>assistant\n고마워요"},
        {"role": "assistant", "content": "천만에요 <|endoftext|>"},
    ]
    mistral = load(mistral_chat_dir)
    check_exact(mistral, messages, "</s>")
    ids = mistral.encode_chat(messages).ids
    assert ids.count(mistral.token_id("[INST]")) == 2 and ids.count(mistral.eot_id) == 2
    assert ids.count(mistral.bos_id) == 1
    polyglot = load(chatml_polyglot_dir)
    check_exact(polyglot, messages, "<|im_end|>")
    ids = polyglot.encode_chat(messages).ids
    assert ids.count(polyglot.end_of_turn_id) == 5 and polyglot.eot_id not in ids


def test_templates_the_mask_cannot_trust_are_refused(mistral_chat_dir: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    # Mistral's published v0.3 template puts the system prompt into the *last* user turn.
    system_last = (
        "{{ bos_token }}{% for m in messages if m['role'] != 'system' %}{% if m['role'] == 'user' %}"
        "{% if loop.last and messages[0]['role'] == 'system' %}"
        "{{ '[INST] ' + messages[0]['content'] + '\\n\\n' }}"
        "{% else %}{{ '[INST] ' }}{% endif %}{{ m['content'] + '[/INST]' }}"
        "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    )
    tokenizer = load(mistral_chat_dir, ChatTokens(template=system_last))
    with pytest.raises(ChatFormatError, match="rewrites earlier turns"):
        tokenizer.encode_chat(messages)
    assert tokenizer.encode_chat(messages[:4], add_generation_prompt=True).ids[-1] == tokenizer.token_id(
        "[/INST]"
    )

    no_end = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(ChatFormatError, match="does not close the assistant reply with '</s>'"):
        load(mistral_chat_dir, ChatTokens(template=no_end)).encode_chat(messages)

    # "Assistant: " ends with the space that Metaspace glues to the reply's first word ("▁Hello").
    glued = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(ChatFormatError, match="generation prompt ends inside a token"):
        load(mistral_chat_dir, ChatTokens(template=glued)).encode_chat(messages)

    with pytest.raises(ChatFormatError, match="roles must alternate"):
        load(mistral_chat_dir).encode_chat(messages[1:2] * 2)
