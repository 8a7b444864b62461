"""Conversion to and from the Hugging Face Llama format (SPEC §8: the ecosystem can use the model).

Our decoder is architecturally a Llama (RMSNorm pre-norm, GQA, SwiGLU, rotary with the
half-split layout), so conversion is a renaming of weights plus a ``config.json``; no
weight permutation is needed. The tokenizer files travel with the weights so that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load the directory as it is.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hcx.model.config import ModelConfig
from hcx.model.transformer import Transformer

_TOP_LEVEL = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_PER_LAYER = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def to_hf_name(name: str) -> str:
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    match = _LAYER.match(name)
    if not match or match.group(2) not in _PER_LAYER:
        raise KeyError(f"no Hugging Face name for parameter {name!r}")
    return f"model.layers.{match.group(1)}.{_PER_LAYER[match.group(2)]}"


def from_hf_name(name: str) -> str:
    inverse_top = {v: k for k, v in _TOP_LEVEL.items()}
    if name in inverse_top:
        return inverse_top[name]
    match = _HF_LAYER.match(name)
    inverse_layer = {v: k for k, v in _PER_LAYER.items()}
    if not match or match.group(2) not in inverse_layer:
        raise KeyError(f"unexpected Hugging Face weight {name!r}")
    return f"layers.{match.group(1)}.{inverse_layer[match.group(2)]}"


def llama_config(cfg: ModelConfig, special_ids: dict[str, int | list[int] | None] | None = None):
    from transformers import LlamaConfig

    ids = special_ids or {}
    return LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_seq_len,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_base,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
        tie_word_embeddings=cfg.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        hidden_act="silu",
        initializer_range=cfg.init_std,
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        pad_token_id=ids.get("pad"),
        dtype="float32",
    )


def export_hf(
    model: Transformer,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the tokenizer files to ``out_dir``.

    ``model`` must hold full (unsharded) weights: gather them first when training sharded.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = {}
    for name, tensor in model.state_dict().items():
        if model.cfg.tie_embeddings and name == "output.weight":
            continue
        weights[to_hf_name(name)] = tensor.detach().to(dtype).contiguous().cpu()
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    special_ids = _special_ids(Path(tokenizer_dir)) if tokenizer_dir else None
    config = llama_config(model.cfg, special_ids)
    config.save_pretrained(out)
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), out, special_ids or {})
    return out


def hf_model_config(hf_dir: str | Path) -> ModelConfig:
    """The decoder config of a Hugging Face Llama directory's ``config.json`` (no weights read).

    Refuses what the decoder cannot represent, naming the field.
    """
    config_path = Path(hf_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no config.json, not a Hugging Face model directory")
    hf = json.loads(config_path.read_text())
    if hf.get("model_type") != "llama":
        raise ValueError(f"{config_path}: model_type {hf.get('model_type')!r}, expected 'llama'")
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or hf.get("rope_scaling"):
        raise ValueError(f"{config_path}: only plain rotary embeddings are supported, got {rope}")
    rope_base = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    if hf.get("head_dim", dim // n_heads) != dim // n_heads:
        raise ValueError(f"{config_path}: head_dim != hidden_size / num_attention_heads is not supported")
    return ModelConfig(
        preset="tiny",
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads", n_heads),
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_base=rope_base,
        norm_eps=hf["rms_norm_eps"],
        tie_embeddings=hf.get("tie_word_embeddings", False),
    )


def import_hf(hf_dir: str | Path, extra: dict[str, torch.Tensor] | None = None) -> Transformer:
    """Load a Llama-format directory (ours or any compatible checkpoint) as a :class:`Transformer`.

    With ``extra`` given, weights that are not the decoder's (the ``score`` head of a
    ``LlamaForSequenceClassification`` export, say) are put there instead of refused, and a
    directory without ``lm_head`` gives a model without an output layer (returning hidden states).
    """
    hf_dir = Path(hf_dir)
    cfg = hf_model_config(hf_dir)
    model = Transformer(cfg)
    weights = {}
    for file in sorted(hf_dir.glob("*.safetensors")):
        for name, tensor in load_file(file).items():
            try:
                weights[from_hf_name(name)] = tensor
            except KeyError:
                if extra is None:
                    raise
                extra[name] = tensor
    if not weights:
        raise FileNotFoundError(f"{hf_dir}: no *.safetensors weights")
    if cfg.tie_embeddings:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    elif extra is not None and "output.weight" not in weights:
        model.output = None
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return model


def _special_ids(tokenizer_dir: Path) -> dict[str, int | list[int] | None]:
    from tokenizers import Tokenizer

    from hcx.tokenizer import specials

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    eot, end_of_turn = tok.token_to_id(specials.END_OF_TEXT), tok.token_to_id(specials.END_OF_TURN)
    # Generation ends a document or an assistant turn, whichever comes first (chat models stop at the turn).
    eos = [eot, end_of_turn] if end_of_turn is not None else eot
    return {"bos": eot, "eos": eos, "pad": tok.token_to_id(specials.PAD)}


def _copy_tokenizer(tokenizer_dir: Path, out: Path, ids: dict[str, int | None]) -> None:
    source = tokenizer_dir / "tokenizer.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: tokenizer.json not found")
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    if not (out / "tokenizer_config.json").is_file():
        from hcx.tokenizer import specials

        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": specials.END_OF_TEXT,
            "eos_token": specials.END_OF_TEXT,
            "pad_token": specials.PAD if ids.get("pad") is not None else None,
            "model_max_length": 1_000_000_000,
            "clean_up_tokenization_spaces": False,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
