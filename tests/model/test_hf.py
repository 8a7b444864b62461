from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf, import_hf


@pytest.fixture(scope="module")
def trained_like_model() -> Transformer:
    """Random weights with a non-default RoPE base, as after the long-context stage."""
    model = Transformer(ModelConfig(preset="tiny", vocab_size=4096, max_seq_len=512))
    model.init_weights(seed=1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)  # norms away from 1 so a wrong mapping shows
    model.set_rope_base(250_000.0)
    return model.eval()


def test_export_loads_in_transformers_with_matching_logits(
    tmp_path, trained_like_model, tokenizer_dir, korean_texts
):
    out = export_hf(trained_like_model, tmp_path / "hf", tokenizer_dir)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2

    hf_model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    text = korean_texts[7][:400]
    ids = hf_tokenizer(text, return_tensors="pt")["input_ids"]
    assert hf_tokenizer.decode(ids[0]) == text
    with torch.no_grad():
        ours, theirs = trained_like_model(ids), hf_model(ids).logits
    assert ids.shape[1] > 50
    assert (ours - theirs).abs().max().item() <= 1e-5 * max(1.0, theirs.abs().max().item())


def test_import_round_trip(tmp_path, trained_like_model, tokenizer_dir):
    out = export_hf(trained_like_model, tmp_path / "hf", tokenizer_dir)
    back = import_hf(out)
    assert back.cfg.model_dump(exclude={"preset", "init_std"}) == trained_like_model.cfg.model_dump(
        exclude={"preset", "init_std", "rope_base"}
    ) | {"rope_base": 250_000.0}
    for (name, a), (_, b) in zip(
        trained_like_model.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_import_rejects_non_llama(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="expected 'llama'"):
        import_hf(tmp_path)
