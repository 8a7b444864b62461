"""Vocabulary extension: old ids and non-Korean encodings unchanged, Korean shorter, on real tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from transformers import AutoTokenizer
from typer.testing import CliRunner

from hcx.cli import app
from hcx.tokenizer import HcxTokenizer
from hcx.tokenizer.continued_bpe import learn_merges
from hcx.tokenizer.corpus import select_documents
from hcx.tokenizer.extend import EXTENSION_FILE, Extension, extend_tokenizer
from hcx.tokenizer.morphemes import MorphemeSplitter, has_hangul
from hcx.tokenizer.spelling import SCRIPTS, pins_script, spelling_of
from tests.tokenizer.conftest import HELD_OUT

TRAIN_BYTES = 300_000
NEW_TOKENS = {"mistral": 1000, "polyglot": 300, "hcx": 300}
OTHER_LANGUAGES = ("en", "code", "ja", "zh", "de")


def korean_training_texts(data_dir: Path) -> list[str]:
    path = data_dir / "pretrain" / "ko.jsonl.gz"
    return list(select_documents(path, held_out=False, fraction=HELD_OUT, max_bytes=TRAIN_BYTES))


def held_out(data_dir: Path, language: str, count: int = 200) -> list[str]:
    path = data_dir / "pretrain" / f"{language}.jsonl.gz"
    return list(select_documents(path, held_out=True, fraction=HELD_OUT, max_docs=count))


@pytest.fixture(scope="module")
def bases(data_dir: Path, tokenizer_dir: Path) -> dict[str, Path]:
    return {
        "mistral": data_dir / "tokenizers" / "mistral-v0.3-32k",
        "polyglot": data_dir / "tokenizers" / "polyglot-ko-30k",
        "hcx": tokenizer_dir,
    }


@pytest.fixture(scope="module")
def extended(bases: dict[str, Path], data_dir: Path, tmp_path_factory) -> dict[str, Path]:
    texts = korean_training_texts(data_dir)
    out = tmp_path_factory.mktemp("extended")
    for name, base in bases.items():
        extend_tokenizer(base, texts, out / name, new_tokens=NEW_TOKENS[name], num_workers=2)
    return {name: out / name for name in bases}


def rust(path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(path / "tokenizer.json"))


def encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]


@pytest.mark.parametrize("name", list(NEW_TOKENS))
def test_existing_ids_and_merges_are_kept_and_new_ids_follow(name, bases, extended):
    base_spec = json.loads((bases[name] / "tokenizer.json").read_text())
    spec = json.loads((extended[name] / "tokenizer.json").read_text())
    base, grown = rust(bases[name]), rust(extended[name])
    old = base.get_vocab(with_added_tokens=True)
    new = grown.get_vocab(with_added_tokens=True)
    assert all(new[token] == i for token, i in old.items())
    assert spec["added_tokens"] == base_spec["added_tokens"]
    assert spec["model"]["merges"][: len(base_spec["model"]["merges"])] == base_spec["model"]["merges"]

    extension = Extension.read(extended[name])
    assert extension.added == NEW_TOKENS[name]
    assert extension.first_new_id == base.get_vocab_size() == extension.base_vocab_size
    assert grown.get_vocab_size() == extension.vocab_size == base.get_vocab_size() + NEW_TOKENS[name]
    assert sorted(i for t, i in new.items() if t not in old) == list(extension.new_ids)
    spelling = spelling_of(spec)
    assert all(pins_script(spelling.raw(grown.id_to_token(i)), SCRIPTS["ko"]) for i in extension.new_ids)
    assert Path(extension.base) == bases[name].resolve()
    copied = {p.name for p in bases[name].iterdir()} & {"tokenizer_config.json", "special_tokens_map.json"}
    assert copied <= {p.name for p in extended[name].iterdir()}
    assert not (extended[name] / "tokenizer.model.v3").exists(), "a stale SentencePiece model was copied"


@pytest.mark.parametrize("name", list(NEW_TOKENS))
def test_text_without_hangul_encodes_exactly_as_before(name, bases, extended, data_dir):
    base, grown = rust(bases[name]), rust(extended[name])
    checked = 0
    for language in OTHER_LANGUAGES:
        docs = [d for d in held_out(data_dir, language) if not has_hangul(d)]
        assert encode(grown, docs) == encode(base, docs), language
        checked += len(docs)
    assert checked > 500


@pytest.mark.parametrize(
    ("name", "most", "used_share"),
    # Polyglot-Ko already has Korean words; what it lacks are the training slice's names (천안함, 포켓몬).
    [("mistral", 0.8, 0.5), ("hcx", 0.95, 0.5), ("polyglot", 0.999, 0.05)],
)
def test_held_out_korean_uses_new_tokens_and_gets_shorter(name, most, used_share, bases, extended, data_dir):
    docs = held_out(data_dir, "ko", 400)
    training = set(korean_training_texts(data_dir))
    assert not training & set(docs)
    base, grown = rust(bases[name]), rust(extended[name])
    before, after = encode(base, docs), encode(grown, docs)
    new_ids = set(Extension.read(extended[name]).new_ids)
    used = {i for ids in after for i in ids} & new_ids
    assert len(used) > used_share * len(new_ids)
    ratio = sum(map(len, after)) / sum(map(len, before))
    assert ratio < most, ratio
    assert [grown.decode(ids) for ids in after] == [base.decode(ids) for ids in before]


@pytest.mark.parametrize("name", ["polyglot", "hcx"])
def test_byte_level_decode_is_lossless(name, extended, data_dir):
    grown = rust(extended[name])
    docs = held_out(data_dir, "ko", 200) + held_out(data_dir, "code", 20)
    assert [grown.decode(ids) for ids in encode(grown, docs)] == docs


_KOREAN_MIX = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),
        st.sampled_from(list(" \n.,!?0123abcXYZ가나다는를이에서했다")),
        st.characters(codec="utf-8"),
    ),
    max_size=120,
)


def test_tiktoken_and_tokenizers_agree_on_the_extended_hcx_tokenizer(extended, data_dir):
    fast, slow = HcxTokenizer(extended["hcx"]), rust(extended["hcx"])
    slow.encode_special_tokens = True  # hcx encodes special-token strings in text as text (SPEC §2)
    assert fast.vocab_size == slow.get_vocab_size()
    auto = AutoTokenizer.from_pretrained(str(extended["hcx"]))
    assert len(auto) == fast.vocab_size
    for language in ("ko", *OTHER_LANGUAGES):
        docs = held_out(data_dir, language, 150)
        ids = fast.encode_batch(docs)
        assert ids == encode(slow, docs) == auto(docs, add_special_tokens=False)["input_ids"], language

    @settings(max_examples=300, deadline=None)
    @given(_KOREAN_MIX)
    def agree(text: str) -> None:
        assert slow.encode(text, add_special_tokens=False).ids == fast.encode(text)

    agree()


@pytest.mark.parametrize("name", list(NEW_TOKENS))
def test_arbitrary_text_without_hangul_encodes_as_before(name, bases, extended):
    base, grown = rust(bases[name]), rust(extended[name])
    fast = (HcxTokenizer(bases[name]), HcxTokenizer(extended[name])) if name == "hcx" else None

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=200).filter(lambda t: not has_hangul(t)))
    def same(text: str) -> None:
        assert grown.encode(text).ids == base.encode(text).ids
        if fast:
            assert fast[1].encode(text) == fast[0].encode(text)

    same()


def test_new_korean_tokens_stay_inside_morphemes(extended, data_dir):
    """Every new multi-character token is part of one Kiwi morpheme piece of a training word."""
    words = {" " + w for text in korean_training_texts(data_dir) for w in text.split() if has_hangul(w)}
    pieces = [p for parts in MorphemeSplitter(num_workers=2).split_many(words).values() for p in parts]
    joined = "\x00".join(pieces)
    grown = rust(extended["mistral"])
    extension = Extension.read(extended["mistral"])
    texts = [grown.id_to_token(i).replace("▁", " ") for i in extension.new_ids]
    merged = [t for t in texts if len(t.strip()) > 1]
    assert len(merged) > 100
    outside = [t for t in merged if t not in joined]
    assert outside == []


def test_extend_command_on_the_tiny_recipe(repo_root: Path, tmp_path: Path, data_dir: Path):
    out = tmp_path / "ext"
    result = CliRunner().invoke(
        app,
        [
            "tokenizer", "extend", str(repo_root / "recipes" / "tiny.yaml"),
            "--set", f"tokenizer.output_dir={out}",
            "--set", f"tokenizer.cache_dir={tmp_path / 'cache'}",
            "--set", "tokenizer.extend.new_tokens=500",
            "--set", "tokenizer.extend.max_bytes_per_file=150000",
            "--set", "tokenizer.stats.docs_per_language=50",
        ],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for text in ("Korean", "English", "code", "added 500 ko tokens", "32,768 → 33,268"):
        assert text in result.output
    extension = json.loads((out / EXTENSION_FILE).read_text())
    assert extension["first_new_id"] == 32_768 and extension["language"] == "ko"
    assert Path(extension["base"]) == (data_dir / "tokenizers" / "mistral-v0.3-32k").resolve()
    assert list((tmp_path / "cache").glob("kiwi-*.pkl")), "Kiwi analyses are kept for the next run"


def test_extend_command_names_a_missing_base(repo_root: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app,
        [
            "tokenizer", "extend", str(repo_root / "recipes" / "tiny.yaml"),
            "--set", f"tokenizer.extend.base={tmp_path / 'nowhere'}",
            "--set", f"tokenizer.output_dir={tmp_path / 'out'}",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "nowhere" in result.output and not (tmp_path / "out").exists()


def test_learn_merges_takes_the_most_frequent_allowed_pair_each_step():
    units = {("a", "b", "c"): 5, ("a", "b"): 2, ("x", "y"): 4, ("b", "c"): 1}
    merges = learn_merges(units, lambda left, right: "x" not in left, new_tokens=3, min_frequency=2)
    # ab (7) beats bc (6), then ab+c (5); xy is refused and bc is left with 1 < min_frequency.
    assert merges == [("a", "b"), ("ab", "c")]
    assert learn_merges(units, lambda left, right: True, new_tokens=1) == [("a", "b")]
    assert learn_merges({("p", "q"): 3, ("q", "p"): 3}, lambda left, right: True, 1) == [("p", "q")]


@pytest.mark.parametrize(
    ("text", "pinned"),
    [
        ("가", True),
        ("한국어", True),
        ("abc", False),
        ("中文", False),
        ("ㄱ", True),
    ],
)
def test_pins_script_on_whole_characters(text: str, pinned: bool):
    assert pins_script(text.encode("utf-8"), SCRIPTS["ko"]) is pinned


def test_pins_script_on_partial_utf8():
    hangul = SCRIPTS["ko"]
    assert pins_script(b"\xea\xb0", hangul)  # U+AC00..U+AC3F: all syllables
    assert not pins_script(b"\xea", hangul)  # U+A000..U+AFFF: Yi, Vai, ... as well
    assert pins_script(b"\xeb", hangul) and pins_script(b"\xed", hangul)  # U+B000.., U+D000..U+D7FF
    assert not pins_script(b"\xb0\x80", hangul)  # continuation bytes of any 3-byte character
    assert not pins_script(" 中".encode()[:3], hangul)


def test_the_pipeline_stage_extends_when_the_recipe_says_so(repo_root: Path, tmp_path: Path):
    """`tokenizer.extend` set: the tokenizer stage extends the base into tokenizer.output_dir."""
    from hcx.stages import STAGES

    stage = STAGES["tokenizer"]
    config = stage.load(
        repo_root / "recipes" / "continue.yaml",
        [
            f"tokenizer.output_dir={tmp_path / 'tok'}",
            f"tokenizer.cache_dir={tmp_path / 'cache'}",
            "tokenizer.extend.base=${data_dir}/tokenizers/mistral-v0.3-32k",
            "tokenizer.extend.new_tokens=300",
            "tokenizer.extend.max_bytes_per_file=100000",
            "tokenizer.stats.docs_per_language=20",
        ],
    )
    assert stage.execute(config) == tmp_path / "tok"
    assert json.loads((tmp_path / "tok" / EXTENSION_FILE).read_text())["added"] == 300
