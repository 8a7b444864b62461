"""A model's own Hugging Face tokenizer behind hcx's protocol: ids, text, overrides, persistence."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from hcx.tokenizer import ChatTokens, HcxTokenizer, HfTokenizer, Tokenizer, TokenizerFormatError, load
from hcx.tokenizer.chat import ChatFormatError
from hcx.tokenizer.hf_tokenizer import keep_chat_tokens
from tests.tokenizer.hf_chat_dirs import MISTRAL_TEMPLATE, conversations, mistral_dir

TRICKY = "a </s> b [INST] <s>[/INST] <|im_end|> <|endoftext|> <|endofturn|> c"


def real_texts(data_dir: Path, per_language: int = 40) -> list[str]:
    texts = []
    for language in ("ko", "en", "ja", "code"):
        with gzip.open(data_dir / "pretrain" / f"{language}.jsonl.gz", "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"][:2000] for line in itertools.islice(f, per_language)]
    return texts


def test_every_tokenizer_keeps_the_protocol(tok, mistral_chat_dir, chatml_polyglot_dir) -> None:
    mistral, polyglot = load(mistral_chat_dir), load(chatml_polyglot_dir)
    assert isinstance(tok, HcxTokenizer) and isinstance(mistral, HfTokenizer)
    assert all(isinstance(t, Tokenizer) for t in (tok, mistral, polyglot))
    assert tok.bos_id == tok.eot_id == tok.token_id("<|endoftext|>") and not tok.adds_bos

    assert mistral.vocab_size == 32768
    assert (mistral.bos_id, mistral.eot_id, mistral.end_of_turn_id) == (1, 2, 2) and mistral.adds_bos
    assert mistral.pad_id == mistral.eot_id  # no pad token: padding uses eos
    assert mistral.token_id("[INST]") == 3 and mistral.special_tokens["[/INST]"] == 4
    with pytest.raises(KeyError, match="not a special token"):
        mistral.token_id("<|fim_prefix|>")

    assert polyglot.vocab_size == 30005
    assert polyglot.eot_id == polyglot.token_id("<|endoftext|>") == 2
    assert polyglot.end_of_turn_id == polyglot.token_id("<|im_end|>")  # found in the template
    assert polyglot.bos_id == polyglot.eot_id and not polyglot.adds_bos  # no BOS: documents follow eos


def test_special_token_strings_in_text_stay_text(tok, mistral_chat_dir, chatml_polyglot_dir) -> None:
    for tokenizer in (tok, load(mistral_chat_dir), load(chatml_polyglot_dir)):
        ids = tokenizer.encode(TRICKY)
        assert not set(ids) & set(tokenizer.special_tokens.values()), tokenizer
        assert tokenizer.decode(ids) == TRICKY
        assert tokenizer.encode_batch([TRICKY, "x"]) == [ids, tokenizer.encode("x")]


def test_text_round_trips_and_matches_transformers(data_dir, mistral_chat_dir, chatml_polyglot_dir) -> None:
    """As ``transformers`` encodes with ``split_special_tokens`` (English WikiText has ``<unk>`` as text)."""
    texts = real_texts(data_dir)
    for directory in (mistral_chat_dir, chatml_polyglot_dir):
        ours, theirs = load(directory), AutoTokenizer.from_pretrained(directory)
        batch = ours.encode_batch(texts)
        for text, ids in zip(texts, batch, strict=True):
            assert (
                ids
                == ours.encode(text)
                == theirs.encode(text, add_special_tokens=False, split_special_tokens=True)
            )
            # Mistral's decoder drops the space its encoder turns into the first token's "▁"
            assert ours.decode(ids) == (text.removeprefix(" ") if directory == mistral_chat_dir else text)
            assert ours.decode_bytes(ids) == ours.decode(ids).encode()


def test_pickled_tokenizer_is_the_same(data_dir, mistral_chat_dir) -> None:
    """Ray ships the tokenizer to rollout actors by pickling it."""
    tokenizer = load(mistral_chat_dir, ChatTokens(pad="<unk>"))
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode(TRICKY) == tokenizer.encode(TRICKY)
    assert copy.chat_tokens == tokenizer.chat_tokens and copy.pad_id == 0
    messages = conversations(data_dir, "ko", limit=1)[0]
    assert copy.encode_chat(messages) == tokenizer.encode_chat(messages)


def test_overrides_apply_and_persist_for_later_stages(data_dir, tok, tmp_path) -> None:
    base = mistral_dir(data_dir, tmp_path / "base", template=None)
    messages = conversations(data_dir, "en", every=50, limit=1)[0]
    with pytest.raises(ChatFormatError, match="no chat template"):
        load(base).encode_chat(messages)
    chat = ChatTokens(template=MISTRAL_TEMPLATE, pad="<unk>")
    tuned = load(base, chat)
    assert tuned.pad_id == 0 and tuned.end_of_turn_id == 2
    assert tuned.chat_tokens.template == MISTRAL_TEMPLATE

    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(base / "tokenizer.json", export / "tokenizer.json")
    shutil.copy(base / "tokenizer_config.json", export / "tokenizer_config.json")
    keep_chat_tokens(tuned, export)
    later = load(export)
    assert later.chat_tokens == tuned.chat_tokens
    assert later.encode_chat(messages) == tuned.encode_chat(messages)
    theirs = AutoTokenizer.from_pretrained(export)
    assert theirs.apply_chat_template(messages, tokenize=False) == later.render_chat(messages)
    assert theirs.pad_token == "<unk>"

    with pytest.raises(TokenizerFormatError, match="chat end_of_turn '<\\|nope\\|>' is not a token"):
        load(base, ChatTokens(end_of_turn="<|nope|>"))
    with pytest.raises(ValueError, match="chat overrides apply to Hugging Face tokenizers"):
        load(tok.path, chat)
    assert isinstance(load(tok.path, ChatTokens()), HcxTokenizer)
