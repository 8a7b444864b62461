"""int8 weights (:mod:`hcx.infer.quantize`) on the briefly pretrained tiny model of ``base_model_dir``.

Accuracy bound: held-out bits per byte of the int8 model within 0.1 % (relative) of float32, in
Korean and in English. Measured on this model: -0.001 % in both (3.40913 -> 3.40910 Korean,
3.53589 -> 3.53586 English); on the tiny recipe's PPO model (``benchmarks/quantize.py``) within
0.01 %. The held-out text comes from the shared pretraining files the model's corpus was cut from
(``corpus_glob``: Korean documents 3000-4499, English 3000-3199), documents it did not train on.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from hcx.infer.config import EngineConfig
from hcx.infer.engine import Engine
from hcx.infer.quantize import Int8Linear, quantize_weights, weight_bytes
from hcx.infer.sampling import SamplingParams
from hcx.model import ModelConfig
from hcx.model.load import load_model
from hcx.model.transformer import Transformer
from hcx.serve.api import ApiConfig
from hcx.serve.server import ServeConfig, build_app
from hcx.train.bpb import text_bits_per_byte
from tests.model.conftest import read_texts

MAX_RELATIVE_BPB_DELTA = 0.001


@pytest.fixture(scope="module")
def full(base_model_dir) -> Transformer:
    return load_model(base_model_dir, torch.device("cpu"), torch.float32).model.eval()


@pytest.fixture(scope="module")
def int8(full: Transformer) -> Transformer:
    return quantize_weights(copy.deepcopy(full), "int8")


def test_held_out_bits_per_byte_within_delta_of_float32(full, int8, tok, data_dir):
    held_out = {
        "ko": read_texts(data_dir / "pretrain" / "ko.jsonl.gz", 400, skip=6000),
        "en": read_texts(data_dir / "pretrain" / "en.jsonl.gz", 150, skip=5000),
    }
    for lang, texts in held_out.items():
        want = text_bits_per_byte(full, tok.encode, texts, bos_id=tok.eot_id)
        got = text_bits_per_byte(int8, tok.encode, texts, bos_id=tok.eot_id)
        assert abs(got / want - 1) <= MAX_RELATIVE_BPB_DELTA, (lang, got, want)


def test_linear_layers_hold_int8_weights_and_the_model_shrinks(full, int8):
    linears = {name: m for name, m in full.named_modules() if isinstance(m, nn.Linear)}
    quantized = dict(int8.named_modules())
    assert len(linears) == 7 * full.cfg.n_layers + 1  # wq wk wv wo w1 w2 w3 per block, the head
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())
    for name, linear in linears.items():
        layer = quantized[name]
        assert isinstance(layer, Int8Linear), name
        assert layer.qweight.dtype == torch.int8 and layer.qweight.shape == linear.weight.shape
    assert int8.tok_embeddings.weight.dtype == torch.float32
    torch.testing.assert_close(int8.tok_embeddings.weight, full.tok_embeddings.weight, rtol=0, atol=0)
    # each weight: 4 bytes -> 1; each row gains a float32 scale
    saved = sum(3 * m.weight.numel() - 4 * m.out_features for m in linears.values())
    assert weight_bytes(int8) == weight_bytes(full) - saved
    assert weight_bytes(int8) < 0.6 * weight_bytes(full)


def test_a_head_tied_to_the_embeddings_stays():
    model = Transformer(ModelConfig(preset="tiny", vocab_size=256, n_layers=1, tie_embeddings=True))
    quantize_weights(model, "int8")
    assert isinstance(model.output, nn.Linear) and model.output.weight is model.tok_embeddings.weight
    assert isinstance(model.layers["0"].feed_forward.w1, Int8Linear)


def test_serve_loads_int8_weights(base_model_dir):
    cfg = ServeConfig(checkpoint=base_model_dir, quantize="int8", api=ApiConfig(served_name="m"))
    model = build_app(cfg).state.server.engine.model
    assert isinstance(model.output, Int8Linear) and model.output.qweight.dtype == torch.int8


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_engine_generates_greedily_with_int8(int8, tok, korean_prompts, dtype):
    model = copy.deepcopy(int8).to(dtype)
    engine = Engine(model, tok, EngineConfig(block_size=16, num_blocks=256, max_running=8))
    greedy = SamplingParams(temperature=0.0, max_new_tokens=16, stop_token_ids=[])
    outs = engine.generate(korean_prompts[:8], greedy)
    assert [len(o.token_ids) for o in outs] == [16] * 8
    assert all(0 <= t < tok.vocab_size for o in outs for t in o.token_ids)


def test_paged_generation_and_scoring_agree_on_the_int8_model(int8, tok, korean_prompts):
    """In float64 activations no argmax can flip between the engine's paged forward and scoring."""
    engine = Engine(copy.deepcopy(int8).double(), tok, EngineConfig(block_size=16, num_blocks=256))
    prompts = korean_prompts[:6]
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=12, stop_token_ids=[]))
    scores = engine.score(prompts, [o.token_ids for o in outs])
    for out, score in zip(outs, scores, strict=True):
        assert score.greedy
        torch.testing.assert_close(
            score.logprobs, torch.tensor(out.logprobs, dtype=torch.float64), atol=1e-9, rtol=0
        )


def test_int8_linear_matches_its_dequantized_weight_on_every_path():
    torch.manual_seed(0)
    linear = nn.Linear(128, 96)
    layer = Int8Linear(linear)
    dequantized = layer.qweight.float() * layer.scale[:, None]
    # round to nearest: at most half a step per row from the float weight
    assert bool(((dequantized - linear.weight).abs() <= layer.scale[:, None] / 2 + 1e-7).all())
    for rows in (1, 3, 40):  # bfloat16: fused kernel up to 16 rows, dequantized slices above
        x = torch.randn(2, rows, 128)
        want = F.linear(x, dequantized, linear.bias)
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer(x.bfloat16()).float(), want, atol=0.05, rtol=0.02)
        layer.slice_rows = 16  # several slices
        torch.testing.assert_close(layer(x), want, atol=1e-5, rtol=1e-5)
        layer.slice_rows = 8192


def test_unknown_mode_is_refused(full):
    with pytest.raises(ValueError, match=r"unknown quantization 'int4': choose one of none, int8"):
        quantize_weights(copy.deepcopy(full), "int4")  # type: ignore[arg-type]
    assert quantize_weights(full, "none") is full
    with pytest.raises(ValidationError, match="quantize"):
        ServeConfig.model_validate({"checkpoint": "x", "api": {"served_name": "m"}, "quantize": "int4"})
