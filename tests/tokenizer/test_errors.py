"""Bad input gives a clear error naming the file, and leaves no partial output behind."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from hcx.tokenizer import HcxTokenizer, HfTokenizer, TokenizerFormatError, load, train_tokenizer
from hcx.tokenizer.corpus import TokenizerInputError


def _train(path: Path, out: Path, vocab_size: int = 300):
    return train_tokenizer(files=[path], vocab_size=vocab_size, output_dir=out, morpheme_aware=False)


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


def test_empty_input_file(tmp_path: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TokenizerInputError, match=r"no training text in .*empty\.jsonl"):
        _train(empty, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert _leftovers(tmp_path) == []


def test_non_utf8_input_names_file_and_line(tmp_path: Path):
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wb") as f:
        f.write(json.dumps({"text": "좋은 문서"}, ensure_ascii=False).encode() + b"\n")
        f.write(b'{"text": "\xff\xfe broken"}\n')
    with pytest.raises(TokenizerInputError, match=r"bad\.jsonl\.gz:2: not valid UTF-8"):
        _train(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_invalid_json_and_missing_field(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"body": "no text field"}\n', encoding="utf-8")
    with pytest.raises(TokenizerInputError, match=r"bad\.jsonl:2: no string field 'text'"):
        _train(bad, tmp_path / "out")
    bad.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(TokenizerInputError, match=r"bad\.jsonl:2: invalid JSON"):
        _train(bad, tmp_path / "out")


def test_missing_input_glob(tmp_path: Path):
    with pytest.raises(TokenizerInputError, match="no input file matches"):
        _train(tmp_path / "nothing-*.jsonl.gz", tmp_path / "out")


def test_vocab_smaller_than_bytes_plus_specials(tmp_path: Path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": "한국어 문장입니다."}, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"smaller than the 256 byte tokens plus 9 special tokens \(265\)"):
        _train(good, tmp_path / "out", vocab_size=264)
    assert not (tmp_path / "out").exists()


def test_failed_training_keeps_the_previous_tokenizer(tmp_path: Path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"text": "안녕하세요. 반갑습니다. " * 20}, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = _train(good, tmp_path / "out")
    before = (out / "tokenizer.json").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xc3\x28\n")
    with pytest.raises(TokenizerInputError):
        _train(bad, out)
    assert (out / "tokenizer.json").read_bytes() == before
    assert load(out).decode(load(out).encode("안녕하세요")) == "안녕하세요"


def test_missing_tokenizer_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"tokenizer file not found: .*tokenizer\.json"):
        load(tmp_path)


def test_incompatible_tokenizer_files(tmp_path: Path, data_dir: Path):
    polyglot = data_dir / "tokenizers" / "polyglot-ko-30k" / "tokenizer.json"
    with pytest.raises(TokenizerFormatError, match="not the hcx regex"):
        HcxTokenizer(polyglot)
    assert isinstance(load(polyglot), HfTokenizer)
    wordpiece = tmp_path / "wordpiece.json"
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(TokenizerFormatError, match="byte-level BPE"):
        HcxTokenizer(wordpiece)
    with pytest.raises(TokenizerFormatError, match=r"not a tokenizer\.json that `tokenizers` loads"):
        load(wordpiece)
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xff not json")
    with pytest.raises(TokenizerFormatError, match="not valid JSON tokenizer file"):
        load(garbage)
