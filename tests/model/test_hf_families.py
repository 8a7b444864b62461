"""Llama, Llama 3.1, Mistral and Qwen2 through import_hf / export_hf: transformers' logits both ways."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, MistralConfig, Qwen2Config

from hcx.model import ModelConfig, Transformer
from hcx.model.hf import export_hf, import_hf
from hcx.model.load import ModelLoadError, load_model

SHAPE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    initializer_range=0.15,  # logits of order one, so a wrong mapping or angle shows
)
LLAMA31_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500_000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


def hf_model(config) -> torch.nn.Module:
    """A random transformers model with norms and biases away from their initial 1 and 0."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.3)
    return model.eval()


def tokens() -> torch.Tensor:
    return torch.randint(0, SHAPE["vocab_size"], (2, 48), generator=torch.Generator().manual_seed(1))


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = theirs.abs().max().item()
    assert scale > 0.5
    assert (ours - theirs).abs().max().item() <= 1e-4 * max(1.0, scale)


def check_both_ways(source: Path, reference: torch.nn.Module, tmp_path: Path) -> dict:
    """HF → import_hf equals transformers; import → export_hf → transformers equals us; the
    export has the source's model_type and imports back to the same config. Returns its config.json."""
    ids = tokens()
    ours = import_hf(source).eval()
    with torch.no_grad():
        logits = ours(ids)
        assert_close(logits, reference(ids).logits)
    out = export_hf(ours, tmp_path / "export")
    exported = json.loads((out / "config.json").read_text())
    assert exported["model_type"] == json.loads((source / "config.json").read_text())["model_type"]
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(back) is type(reference)
    with torch.no_grad():
        assert_close(back(ids).logits, logits)
    assert import_hf(out).cfg == ours.cfg
    return exported


def saved(config, path: Path, **kwargs) -> tuple[Path, torch.nn.Module]:
    model = hf_model(config)
    model.save_pretrained(path, **kwargs)
    return path, model


def test_llama(tmp_path):
    source, reference = saved(LlamaConfig(**SHAPE, rope_theta=50_000.0), tmp_path / "hf")
    exported = check_both_ways(source, reference, tmp_path)
    assert exported["rope_parameters"] == {"rope_type": "default", "rope_theta": 50_000.0}


def test_llama31_rope_scaling(tmp_path):
    config = LlamaConfig(**SHAPE, rope_parameters=dict(LLAMA31_ROPE))
    source, reference = saved(config, tmp_path / "hf")
    exported = check_both_ways(source, reference, tmp_path)
    assert exported["rope_parameters"] == LLAMA31_ROPE

    ours = import_hf(source)
    assert ours.cfg.rope_scaling is not None and ours.cfg.rope_scaling.factor == 8.0
    unscaled = Transformer(ours.cfg.model_copy(update={"rope_scaling": None}))
    unscaled.load_state_dict(ours.state_dict())
    with torch.no_grad():
        difference = (unscaled(tokens()) - reference(tokens()).logits).abs().max().item()
    assert difference > 1e-2  # the scaling changes these positions: the parity above tested it


def test_llama31_written_by_transformers_4(tmp_path):
    """Most published configs spell it ``rope_theta`` + ``rope_scaling``."""
    source, reference = saved(LlamaConfig(**SHAPE, rope_parameters=dict(LLAMA31_ROPE)), tmp_path / "hf")
    config = json.loads((source / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config["rope_theta"] = rope.pop("rope_theta")
    config["rope_scaling"] = rope
    (source / "config.json").write_text(json.dumps(config))
    check_both_ways(source, reference, tmp_path)


def test_llama_head_dim_not_hidden_over_heads(tmp_path):
    source, reference = saved(LlamaConfig(**SHAPE, head_dim=24), tmp_path / "hf")
    exported = check_both_ways(source, reference, tmp_path)
    assert exported["head_dim"] == 24
    cfg = import_hf(source).cfg
    assert cfg.head_dim_override == 24 and cfg.head_dim == 24 and cfg.dim // cfg.n_heads == 16


def test_llama_attention_bias_with_zero_output_bias(tmp_path):
    reference = hf_model(LlamaConfig(**SHAPE, attention_bias=True))
    with torch.no_grad():
        for layer in reference.model.layers:
            layer.self_attn.o_proj.bias.zero_()
    reference.save_pretrained(tmp_path / "hf")
    exported = check_both_ways(tmp_path / "hf", reference, tmp_path)
    assert exported["attention_bias"] is True and import_hf(tmp_path / "hf").cfg.qkv_bias


def test_mistral(tmp_path):
    config = MistralConfig(**SHAPE, sliding_window=4096)  # wider than every position: full attention
    source, reference = saved(config, tmp_path / "hf")
    exported = check_both_ways(source, reference, tmp_path)
    assert exported["sliding_window"] is None
    assert import_hf(source).cfg.family == "mistral"


def test_qwen2_biases_and_tied_embeddings(tmp_path):
    config = Qwen2Config(**SHAPE, tie_word_embeddings=True, rope_theta=1_000_000.0)
    source, reference = saved(config, tmp_path / "hf")
    exported = check_both_ways(source, reference, tmp_path)
    assert exported["tie_word_embeddings"] is True
    ours = import_hf(source)
    assert ours.cfg.qkv_bias and ours.cfg.tie_embeddings and ours.cfg.family == "qwen2"
    bias = reference.model.layers[1].self_attn.k_proj.bias
    assert bias.abs().max() > 0.1 and torch.equal(ours.layers["1"].attention.wk.bias, bias)
    assert ours.output.weight is ours.tok_embeddings.weight


def test_sharded_safetensors(tmp_path):
    source, reference = saved(LlamaConfig(**SHAPE), tmp_path / "hf", max_shard_size="50KB")
    index = json.loads((source / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    check_both_ways(source, reference, tmp_path)


def test_pytorch_model_bin_single_and_sharded(tmp_path):
    reference = hf_model(Qwen2Config(**SHAPE))
    state = reference.state_dict()
    single = tmp_path / "single"
    reference.config.save_pretrained(single)
    torch.save(state, single / "pytorch_model.bin")
    check_both_ways(single, reference, tmp_path / "a")

    sharded = tmp_path / "sharded"
    reference.config.save_pretrained(sharded)
    names = sorted(state)
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        file = f"pytorch_model-0000{i + 1}-of-00002.bin"
        torch.save({name: state[name] for name in part}, sharded / file)
        weight_map |= dict.fromkeys(part, file)
    (sharded / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    check_both_ways(sharded, reference, tmp_path / "b")


def test_hcx_model_exports_as_its_family(tmp_path):
    cfg = ModelConfig(
        preset="tiny", vocab_size=128, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96,
        max_seq_len=128, qkv_bias=True, family="qwen2", head_dim_override=32, init_std=0.3,
    )  # fmt: skip
    model = Transformer(cfg)
    model.init_weights(seed=3)
    assert model.layers["0"].attention.wq.bias.abs().max() == 0
    with torch.no_grad():
        model.layers["0"].attention.wq.bias.normal_()
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params()
    out = export_hf(model.eval(), tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    back = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        assert_close(model(tokens()), back(tokens()).logits)
    assert import_hf(out).cfg == cfg


def test_family_and_bias_must_agree():
    with pytest.raises(ValueError, match="qkv_bias"):
        ModelConfig(preset="tiny", family="qwen2")
    with pytest.raises(ValueError, match="qkv_bias"):
        ModelConfig(preset="tiny", family="mistral", qkv_bias=True)


def _write_config(path: Path, config, **changes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config.to_dict() | changes))
    return path


@pytest.mark.parametrize(
    "config, changes, field",
    [
        (LlamaConfig(**SHAPE), {"model_type": "gpt2"}, "model_type 'gpt2'"),
        (LlamaConfig(**SHAPE), {"rope_parameters": {"rope_type": "yarn", "factor": 4.0}}, "rope_type 'yarn'"),
        (LlamaConfig(**SHAPE), {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_type 'linear'"),
        (LlamaConfig(**SHAPE), {"mlp_bias": True}, "mlp_bias"),
        (LlamaConfig(**SHAPE), {"hidden_act": "gelu"}, "hidden_act 'gelu'"),
        (LlamaConfig(**SHAPE), {"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
        (MistralConfig(**SHAPE), {"sliding_window": 32}, "sliding_window 32"),
        (
            Qwen2Config(**SHAPE),
            {"use_sliding_window": True, "sliding_window": 32, "layer_types": None, "max_window_layers": 1},
            "use_sliding_window",
        ),
    ],
)
def test_refusals_name_the_file_and_field(tmp_path, config, changes, field):
    directory = _write_config(tmp_path / "hf", config, **changes)
    with pytest.raises(ValueError, match=re.escape(field)) as info:
        import_hf(directory)
    assert str(directory / "config.json") in str(info.value)


def test_llama3_scaling_without_its_factors_is_refused(tmp_path):
    rope = {"rope_type": "llama3", "factor": 8.0, "rope_theta": 500_000.0}
    directory = _write_config(tmp_path / "hf", LlamaConfig(**SHAPE), rope_parameters=rope)
    with pytest.raises(ValueError, match="low_freq_factor") as info:
        import_hf(directory)
    assert str(directory / "config.json") in str(info.value)


def test_nonzero_output_projection_bias_is_refused(tmp_path):
    source, _ = saved(LlamaConfig(**SHAPE, attention_bias=True), tmp_path / "hf")
    with pytest.raises(ValueError, match="attention_bias") as info:
        import_hf(source)
    assert str(source / "config.json") in str(info.value)


def test_hub_id_that_cannot_be_fetched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = "hcx-tests/no-such-model: not a local directory and could not be fetched from the hub"
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        import_hf("hcx-tests/no-such-model")
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        load_model("hcx-tests/no-such-model")


def test_export_with_a_plain_hf_tokenizer(tmp_path, data_dir):
    """A tokenizer that is not hcx's: special ids from its tokenizer_config.json, else none."""
    mistral = data_dir / "tokenizers" / "mistral-v0.3-32k"
    cfg = ModelConfig(
        preset="tiny", vocab_size=32768, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64,
        max_seq_len=64, tie_embeddings=True, family="mistral",
    )  # fmt: skip
    model = Transformer(cfg)
    model.init_weights(seed=0)
    plain = export_hf(model, tmp_path / "plain", mistral)
    config = json.loads((plain / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (None, None, None)
    text = "Hello, 안녕하세요"
    expected = Tokenizer.from_file(str(mistral / "tokenizer.json")).encode(text).ids
    assert AutoTokenizer.from_pretrained(plain)(text)["input_ids"] == expected

    declared = tmp_path / "declared"
    declared.mkdir()
    shutil.copy2(mistral / "tokenizer.json", declared / "tokenizer.json")
    (declared / "tokenizer_config.json").write_text(
        json.dumps(
            {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "tokenizer_class": "LlamaTokenizerFast"}
        )
    )
    config = json.loads((export_hf(model, tmp_path / "with_ids", declared) / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (1, 2, None)
