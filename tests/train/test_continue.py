"""Continued pretraining: ``pretrain.init_from`` and staged freezing (``pretrain.phases``)."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from hcx.model.load import load_model
from hcx.train.config import PretrainConfig
from hcx.train.pretrain import Pretrainer


def continue_config(tmp_path, corpus_glob, tokenizer, init_from, **overrides) -> PretrainConfig:
    base = {
        "corpus": corpus_glob,
        "tokenizer": str(tokenizer),
        "output_dir": str(tmp_path / "run"),
        "init_from": str(init_from),
        "steps": 6,
        "stages": [{"fraction": 1.0, "seq_len": 64, "batch_size": 4, "rope_base": 10_000}],
        "fim": {"rate": 0.0},
        "optim": {"lr": 3e-3, "warmup_steps": 1},
        "checkpoint": {"every": 3},
        "dtype": "float32",
        "log_every": 1,
        "bpb": {"languages": []},  # held-out bits per byte is tested with pretraining itself
    }
    return PretrainConfig.model_validate({**base, **overrides})


def weights(path) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in load_model(path).model.state_dict().items()}


def test_continues_from_the_export_and_freezes_by_phase(tmp_path, corpus_glob, tokenizer_dir, base_model_dir):
    """The first half trains layer 1 only, the second half everything; resume re-enters the phase."""
    cfg = continue_config(
        tmp_path,
        corpus_glob,
        tokenizer_dir,
        base_model_dir,
        phases=[{"fraction": 0.5, "train": ["layers.1.*"]}, {"fraction": 0.5, "train": ["*"]}],
    )
    base = weights(base_model_dir)
    first = Pretrainer(cfg).train(max_steps=3)
    assert first.losses[0] < 8.0, "a continued run starts from the base model, not from random weights"
    after_phase_one = weights(cfg.output_dir)
    for name, tensor in base.items():
        changed = not torch.equal(tensor, after_phase_one[name])
        assert changed == name.startswith("layers.1."), name

    Pretrainer(cfg).train()
    after = weights(cfg.output_dir)
    assert not torch.equal(after["layers.0.attention.wq.weight"], base["layers.0.attention.wq.weight"])
    assert not torch.equal(after["tok_embeddings.weight"], base["tok_embeddings.weight"])


def test_refuses_a_model_section_and_unknown_patterns(tmp_path, corpus_glob, tokenizer_dir, base_model_dir):
    with pytest.raises(ValueError, match="model: comes from init_from"):
        continue_config(tmp_path, corpus_glob, tokenizer_dir, base_model_dir, model={"preset": "tiny"})
    cfg = continue_config(
        tmp_path, corpus_glob, tokenizer_dir, base_model_dir, phases=[{"fraction": 1.0, "train": ["layer.*"]}]
    )
    with pytest.raises(ValueError, match=r"phases\[0\].train: 'layer.\*' matches no parameter"):
        Pretrainer(cfg)
    cfg = continue_config(
        tmp_path,
        corpus_glob,
        tokenizer_dir,
        base_model_dir,
        phases=[{"fraction": 1.0, "train": ["new_embeddings"]}],
    )
    with pytest.raises(ValueError, match="new_embeddings needs init_from and a tokenizer with more tokens"):
        Pretrainer(cfg)


@pytest.fixture(scope="module")
def english_base(tmp_path_factory, data_dir):
    """The issue's "open model": a small Mistral-family decoder pretrained with Mistral v0.3's
    tokenizer on shared English and code only, exported to Hugging Face format."""
    from tests.model.conftest import read_texts

    out = tmp_path_factory.mktemp("english_base")
    corpus = out / "corpus"
    corpus.mkdir()
    for language, limit in (("en", 1500), ("code", 60)):
        texts = read_texts(data_dir / "pretrain" / f"{language}.jsonl.gz", limit, skip=500)
        with gzip.open(corpus / f"{language}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    cfg = PretrainConfig.model_validate(
        {
            "corpus": str(corpus / "*.jsonl.gz"),
            "tokenizer": str(data_dir / "tokenizers" / "mistral-v0.3-32k"),
            "output_dir": str(out / "run"),
            "model": {
                "preset": "tiny",
                "vocab_size": None,
                "n_layers": 2,
                "family": "mistral",
                "max_seq_len": 512,
            },
            "steps": 150,
            "stages": [{"fraction": 1.0, "seq_len": 128, "batch_size": 4, "rope_base": 10_000}],
            "fim": {"rate": 0.0},
            "optim": {"lr": 1e-2, "warmup_steps": 10},
            "checkpoint": {"every": 1000},
            "dtype": "float32",
            "export_hf": str(out / "hf"),
        }
    )
    result = Pretrainer(cfg).train()
    assert result.losses[-1] < result.losses[0] - 2
    return out / "hf"


@pytest.fixture(scope="module")
def korean_extension(tmp_path_factory, data_dir, english_base):
    from hcx.tokenizer.extend import extend_tokenizer
    from tests.model.conftest import read_texts

    out = tmp_path_factory.mktemp("extended")
    texts = read_texts(data_dir / "pretrain" / "ko.jsonl.gz", 3000, skip=5000)
    extend_tokenizer(english_base, texts, out, new_tokens=600)
    return out


def test_mean_initialisation_takes_little_from_what_the_base_knew(data_dir, english_base, korean_extension):
    """Right after extension, before any training: with mean rows the new tokens take far less
    probability from English and code (which never use them) than with random rows, because a
    new token's logit starts as the mean of its pieces' logits (Jensen: no more mass than they had).

    Korean bits per byte of all three are printed. The issue expected the mean-initialised
    model's Korean to be much closer to the base's than the random one's; on this English-only
    base (which cannot read Korean: ~8-9 bits per byte) both extended models land far from the
    base and close to each other, random slightly lower, so that ordering is not asserted.
    """
    from hcx.model.extend import grow_for_tokenizer
    from hcx.tokenizer import load as load_tokenizer
    from hcx.train.bpb import text_bits_per_byte
    from tests.model.conftest import read_texts

    sizes = {"ko": 10, "en": 12, "code": 6}
    held_out = {  # the first 3,000 characters of each: English articles and code files are long
        lang: [text[:3000] for text in read_texts(data_dir / "pretrain" / f"{lang}.jsonl.gz", n)]
        for lang, n in sizes.items()
    }
    base, base_tok = load_model(english_base).pair()
    extended_tok = load_tokenizer(korean_extension)
    bpb = {
        "base": {
            lang: text_bits_per_byte(base, base_tok.encode, texts, bos_id=base_tok.eot_id)
            for lang, texts in held_out.items()
        }
    }
    for init in ("mean", "random"):
        model = load_model(english_base).model
        grow_for_tokenizer(model, english_base, korean_extension, init=init)
        bpb[init] = {
            lang: text_bits_per_byte(model, extended_tok.encode, texts, bos_id=extended_tok.eot_id)
            for lang, texts in held_out.items()
        }
    for name, values in bpb.items():
        print(name, {lang: round(v, 3) for lang, v in values.items()})
    print(
        "English/code moved by",
        {lang: round(bpb["mean"][lang] - bpb["base"][lang], 4) for lang in ("en", "code")},
    )
    moved = {
        init: {lang: bpb[init][lang] - bpb["base"][lang] for lang in ("en", "code")}
        for init in ("mean", "random")
    }
    print("English/code bits per byte moved by", moved)
    for lang in ("en", "code"):
        assert 0 <= moved["mean"][lang] < 0.5 * moved["random"][lang], (lang, bpb)
    assert bpb["mean"]["en"] == pytest.approx(bpb["base"]["en"], rel=0.03)


def test_new_embeddings_phase_trains_only_the_new_rows(tmp_path, data_dir, english_base, korean_extension):
    """Continued pretraining on Korean with the extended tokenizer: the first phase moves only the
    new tokens' rows; the base's rows and every other weight stay exactly as they were."""
    from tests.model.conftest import read_texts

    corpus = tmp_path / "ko.jsonl.gz"
    with gzip.open(corpus, "wt", encoding="utf-8") as f:
        texts = read_texts(data_dir / "pretrain" / "ko.jsonl.gz", 400, skip=9000)
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    cfg = continue_config(
        tmp_path,
        str(corpus),
        korean_extension,
        english_base,
        steps=4,
        phases=[{"fraction": 0.5, "train": ["new_embeddings"]}, {"fraction": 0.5, "train": ["*"]}],
        checkpoint={"every": 2},
    )
    base = weights(english_base)
    Pretrainer(cfg).train(max_steps=2)
    grown = weights(cfg.output_dir)
    rows = base["tok_embeddings.weight"].shape[0]
    initial = weights_after_init(english_base, korean_extension)
    for name, tensor in base.items():
        if name in ("tok_embeddings.weight", "output.weight"):
            assert torch.equal(grown[name][:rows], tensor), name
            assert not torch.equal(grown[name][rows:], initial[name][rows:]), name
        else:
            assert torch.equal(grown[name], tensor), name
    Pretrainer(cfg).train()
    assert not torch.equal(
        weights(cfg.output_dir)["layers.0.attention.wq.weight"], base["layers.0.attention.wq.weight"]
    )


def weights_after_init(base_dir, tokenizer_dir) -> dict[str, torch.Tensor]:
    from hcx.model.extend import grow_for_tokenizer

    model = load_model(base_dir).model
    grow_for_tokenizer(model, base_dir, tokenizer_dir, init="mean")
    return model.state_dict()
