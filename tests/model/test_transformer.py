from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hcx.model import PRESETS, Causal, ModelConfig, Transformer
from hcx.model.attention import document_causal_mask
from hcx.model.transformer import apply_rotary


def make_model(**overrides) -> Transformer:
    cfg = ModelConfig(preset="tiny", vocab_size=4096, n_layers=2, max_seq_len=128, **overrides)
    model = Transformer(cfg)
    model.init_weights(seed=0)
    return model.eval()


def korean_ids(tokenizer, texts, n: int, skip: int = 0) -> torch.Tensor:
    ids = [i for t in texts[skip:] for i in tokenizer.encode(t)][:n]
    return torch.tensor(ids)


def test_logit_shapes_and_gqa_grouping(tokenizer, korean_texts):
    model = make_model()
    cfg = model.cfg
    tokens = korean_ids(tokenizer, korean_texts, 2 * 40).view(2, 40)
    assert model(tokens).shape == (2, 40, cfg.vocab_size)

    # GQA: query head h reads key/value head h // (n_heads / n_kv_heads), as in an explicit repeat.
    attn, x = model.layers["0"].attention, torch.randn(2, 40, cfg.dim)
    cos, sin = model.rope_cos[:40][None, :, None], model.rope_sin[:40][None, :, None]
    q = apply_rotary(attn.wq(x).view(2, 40, cfg.n_heads, -1), cos, sin).transpose(1, 2)
    k = apply_rotary(attn.wk(x).view(2, 40, cfg.n_kv_heads, -1), cos, sin).transpose(1, 2)
    v = attn.wv(x).view(2, 40, cfg.n_kv_heads, -1).transpose(1, 2)
    group = cfg.n_heads // cfg.n_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = (q @ k.transpose(-1, -2)) / cfg.head_dim**0.5
    scores = scores.masked_fill(~torch.ones(40, 40, dtype=torch.bool).tril(), float("-inf"))
    expected = attn.wo((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 40, -1))
    got = attn(x, (cos, sin), Causal.of_length(40))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_causal_future_tokens_do_not_change_past_logits(tokenizer, korean_texts):
    model = make_model()
    tokens = korean_ids(tokenizer, korean_texts, 48)[None]
    changed = tokens.clone()
    changed[0, 30:] = (changed[0, 30:] + 7) % 2048
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :30], b[:, :30])
    assert (a[:, 30:] - b[:, 30:]).abs().max() > 1e-3


def test_document_mask_isolates_packed_documents(tokenizer, korean_texts):
    """A packed document with reset positions and the document mask sees exactly what it would alone."""
    model = make_model()
    first, second = korean_ids(tokenizer, korean_texts, 20), korean_ids(tokenizer, korean_texts, 30, skip=5)
    packed = torch.cat([first, second])[None]
    doc_ids = torch.tensor([0] * 20 + [1] * 30)[None]
    positions = torch.cat([torch.arange(20), torch.arange(30)])[None]
    with torch.no_grad():
        together = model(packed, positions=positions, doc_ids=doc_ids)
        alone = model(second[None])
        unmasked = model(packed, positions=positions)
    torch.testing.assert_close(together[:, 20:], alone, atol=1e-5, rtol=1e-4)
    assert (unmasked[:, 20:] - alone).abs().max() > 1e-3

    mask = document_causal_mask(doc_ids)[0, 0]
    assert mask[25, 21] and mask[25, 25] and not mask[25, 26] and not mask[25, 19]


def test_rope_base_change_changes_long_range_logits(tokenizer, korean_texts):
    model = make_model()
    tokens = korean_ids(tokenizer, korean_texts, 64)[None]
    with torch.no_grad():
        before = model(tokens)
        model.set_rope_base(1_000_000.0)
        after = model(tokens)
    assert model.cfg.rope_base == 1_000_000.0
    torch.testing.assert_close(before[:, 0], after[:, 0])  # position 0 has no rotation
    assert (before[:, 1:] - after[:, 1:]).abs().max() > 1e-4


@pytest.mark.parametrize("tie", [False, True])
def test_param_count_is_exact(tie: bool):
    model = make_model(tie_embeddings=tie)
    assert model.cfg.num_params() == sum(p.numel() for p in model.parameters())
    embedding = model.cfg.vocab_size * model.cfg.dim
    assert model.cfg.num_params(embeddings=False) == model.cfg.num_params() - (0 if tie else embedding)


def test_named_presets_have_documented_scale():
    billions = {name: ModelConfig(preset=name, vocab_size=100_000).num_params() / 1e9 for name in PRESETS}
    assert billions["tiny"] < 0.05 < billions["small"] < 0.3
    assert 6.5 < billions["hcx-s"] < 8.5
    assert 65 < billions["hcx-l"] < 75
    cfg = ModelConfig(preset="hcx-s", vocab_size=100_000)
    n = cfg.num_params(embeddings=False)
    attention = 12 * cfg.n_layers * cfg.dim * 4096
    assert cfg.flops_per_token(4096) == 6 * n + attention
    assert cfg.flops_per_token(32768) > cfg.flops_per_token(4096)


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig(preset="tiny", n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig(preset="gigantic")


def test_training_step_reduces_loss_on_korean_text(tokenizer, korean_texts):
    torch.manual_seed(0)
    model = make_model().train()
    tokens = korean_ids(tokenizer, korean_texts, 4 * 65).view(4, 65)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
