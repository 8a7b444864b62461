"""Embedding rows for an extended vocabulary: new rows are sub-token means, old rows and old logits untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from typer.testing import CliRunner

from hcx.cli import app
from hcx.model import ModelConfig, Transformer
from hcx.model.config import padded_vocab_size
from hcx.model.extend import extend_embeddings, extend_model, spell_new_tokens
from hcx.model.load import load_model
from hcx.tokenizer.corpus import select_documents
from hcx.tokenizer.extend import EXTENSION_FILE, Extension, extend_tokenizer
from hcx.train.bpb import text_bits_per_byte

HELD_OUT = 0.05


def documents(data_dir: Path, language: str, held_out: bool, **limit) -> list[str]:
    path = data_dir / "pretrain" / f"{language}.jsonl.gz"
    return list(select_documents(path, held_out=held_out, fraction=HELD_OUT, **limit))


def rust(directory: Path) -> Tokenizer:
    return Tokenizer.from_file(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def extended_dir(tokenizer_dir: Path, data_dir: Path, tmp_path_factory) -> Path:
    texts = documents(data_dir, "ko", held_out=False, max_bytes=300_000)
    out = tmp_path_factory.mktemp("ext") / "hcx-ko"
    extend_tokenizer(tokenizer_dir, texts, out, new_tokens=300, num_workers=2)
    return out


@pytest.fixture(scope="module")
def grown_dir(base_model_dir: Path, extended_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grown") / "mean"
    result = CliRunner().invoke(app, ["model", "extend", str(base_model_dir), str(extended_dir), str(out)])
    assert result.exit_code == 0, result.output
    assert "300 new tokens" in result.output
    return out


@pytest.fixture(scope="module")
def models(base_model_dir: Path, grown_dir: Path) -> tuple[Transformer, Transformer]:
    return load_model(base_model_dir).model, load_model(grown_dir).model


def test_export_has_the_extended_tokenizer_and_padded_rows(grown_dir, extended_dir, models):
    base, grown = models
    extension = Extension.read(grown_dir)
    assert extension == Extension.read(extended_dir)
    assert rust(grown_dir).get_vocab_size() == extension.vocab_size == 4096 + 300
    assert base.cfg.vocab_size == 4096
    assert grown.cfg.vocab_size == padded_vocab_size(4396) == 4416


def test_new_rows_are_the_mean_of_the_base_rows_that_spelled_them(models, tokenizer_dir, extended_dir):
    base, grown = models
    spelled = spell_new_tokens(rust(tokenizer_dir), rust(extended_dir))
    assert sorted(spelled) == list(range(4096, 4396))
    assert all(len(ids) >= 2 and max(ids) < 4096 for ids in spelled.values())
    for i, ids in spelled.items():
        for layer in ("tok_embeddings", "output"):
            old, new = getattr(base, layer).weight, getattr(grown, layer).weight
            assert torch.equal(new[i], old[ids].mean(dim=0)), (layer, i)


def test_old_rows_and_old_logits_are_unchanged(models, extended_dir, data_dir):
    base, grown = models
    for layer in ("tok_embeddings", "output"):
        assert torch.equal(getattr(grown, layer).weight[:4096], getattr(base, layer).weight)
    extended = rust(extended_dir)
    text = next(d for d in documents(data_dir, "en", held_out=True, max_docs=50) if len(d) > 400)[:1500]
    ids = torch.tensor([extended.encode(text, add_special_tokens=False).ids[:200]])
    assert ids.max() < 4096
    with torch.no_grad():
        before, after = base(ids), grown(ids)
    torch.testing.assert_close(after[..., :4096], before, rtol=0, atol=1e-5)
    shift = (after.log_softmax(-1)[..., :4096] - before.log_softmax(-1)).abs().max()
    assert shift > 1e-3, "new tokens take probability mass, so the full softmax must move"


def test_random_control_differs_only_in_the_new_rows(base_model_dir, extended_dir, models, tmp_path):
    _, mean = models
    extend_model(base_model_dir, extended_dir, tmp_path / "random", init="random", seed=3)
    random = load_model(tmp_path / "random").model
    for layer in ("tok_embeddings", "output"):
        a, b = getattr(mean, layer).weight, getattr(random, layer).weight
        assert torch.equal(a[:4096], b[:4096])
        assert torch.equal(a[4396:], b[4396:])
        assert (a[4096:4396] - b[4096:4396]).abs().min() > 0
        assert b[4096:4396].std().item() == pytest.approx(random.cfg.init_std, rel=0.1)


def test_english_bits_per_byte_rise_only_by_the_mass_new_tokens_take(
    models, base_model_dir, extended_dir, tokenizer_dir, data_dir, tmp_path
):
    """English encodes to the same ids and old logits are kept, so each target's probability can only
    shrink by what the new tokens' softmax terms take: a little, whichever initialisation."""
    base, mean = models
    extend_model(base_model_dir, extended_dir, tmp_path / "random", init="random", seed=0)
    random = load_model(tmp_path / "random").model
    texts = documents(data_dir, "en", held_out=True, max_docs=40)
    old, new = rust(tokenizer_dir), rust(extended_dir)
    bos = old.token_to_id("<|endoftext|>")

    def bpb(model: Transformer, tok: Tokenizer) -> float:
        encode = lambda text: tok.encode(text, add_special_tokens=False).ids  # noqa: E731
        return text_bits_per_byte(model, encode, texts, bos_id=bos)

    before = bpb(base, old)
    for grown in (mean, random):
        assert before < bpb(grown, new) < 1.05 * before


def test_tied_embeddings_stay_one_matrix_and_reuse_padded_rows(data_dir, tmp_path):
    polyglot = data_dir / "tokenizers" / "polyglot-ko-30k"
    texts = documents(data_dir, "ko", held_out=False, max_bytes=100_000)
    extend_tokenizer(polyglot, texts, tmp_path / "ext", new_tokens=100, num_workers=2)
    base_tok, extended = rust(polyglot), rust(tmp_path / "ext")
    model = Transformer(ModelConfig(preset="tiny", vocab_size=30_016, n_layers=1, tie_embeddings=True))
    model.init_weights(seed=0)
    old = model.tok_embeddings.weight.detach().clone()
    spelled = spell_new_tokens(base_tok, extended)
    grown = extend_embeddings(model, spelled, extended.get_vocab_size())
    assert (grown.rows_before, grown.rows_after, grown.reused_rows) == (30_016, 30_144, 13)
    assert model.output.weight is model.tok_embeddings.weight
    assert model.cfg.vocab_size == 30_144 and model(torch.tensor([[5, 30_102]])).shape[-1] == 30_144
    weight = model.tok_embeddings.weight
    assert torch.equal(weight[:30_003], old[:30_003])
    for i, ids in spelled.items():
        assert torch.equal(weight[i], old[ids].mean(dim=0))


def test_sentencepiece_characters_are_spelled_by_their_byte_fallback_tokens(data_dir, tmp_path):
    mistral = data_dir / "tokenizers" / "mistral-v0.3-32k"
    texts = documents(data_dir, "ko", held_out=False, max_bytes=50_000)
    extension = extend_tokenizer(mistral, texts, tmp_path / "ext", new_tokens=40, num_workers=2)
    assert extension.new_characters == 40
    base, extended = rust(mistral), rust(tmp_path / "ext")
    spelled = spell_new_tokens(base, extended)
    for i, ids in spelled.items():
        char = extended.id_to_token(i)
        pieces = [base.id_to_token(j) for j in ids]
        assert bytes(int(p[3:5], 16) for p in pieces) == char.encode("utf-8"), (char, pieces)


def test_an_extension_that_moves_an_old_token_is_refused(tokenizer_dir, data_dir):
    polyglot = rust(data_dir / "tokenizers" / "polyglot-ko-30k")
    with pytest.raises(ValueError, match="another id"):
        spell_new_tokens(rust(tokenizer_dir), polyglot)


def test_extension_file_travels_with_the_model(grown_dir):
    assert (grown_dir / EXTENSION_FILE).is_file()
