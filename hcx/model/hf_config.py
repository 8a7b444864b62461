"""The ``config.json`` half of Hugging Face conversion: which decoder a Llama, Mistral or Qwen2
config describes, and the config each family exports as (the weights are :mod:`hcx.model.hf`'s).

The three families are one architecture to us (RMSNorm pre-norm, GQA, SwiGLU, half-split
rotary); they differ in what :class:`ModelConfig` records: Qwen2 has query/key/value biases,
a Llama may have them (``attention_bias``, which also biases the output projection: that bias
must be zero), Mistral has none. What the decoder cannot compute is refused, naming the field:

- other ``model_type``s, activations other than SiLU, ``mlp_bias``, partial rotary;
- rotary types other than the plain one and Llama 3.1's ``llama3`` scaling (linear, dynamic,
  yarn, longrope… change the angles in ways we do not implement);
- a sliding window that bites: full attention equals sliding-window attention only while the
  window covers every position the model is for, so a window shorter than
  ``max_position_embeddings`` (Mistral 7B v0.1, Qwen2 with ``use_sliding_window``) is refused
  rather than silently computing a different model past the window.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hcx.model.config import ModelConfig, RopeScaling

FAMILIES = ("llama", "mistral", "qwen2")


def hf_model_config(hf_dir: str | Path) -> ModelConfig:
    """The decoder config of a Hugging Face directory's ``config.json`` (no weights read)."""
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config.json, not a Hugging Face model directory")
    hf = json.loads(path.read_text())
    family = hf.get("model_type")
    if family not in FAMILIES:
        raise ValueError(
            f"{path}: model_type {family!r} is not supported, expected 'llama', 'mistral' or 'qwen2'"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{path}: hidden_act {hf['hidden_act']!r} is not supported (only 'silu')")
    if hf.get("mlp_bias"):
        raise ValueError(f"{path}: mlp_bias true is not supported (the MLP has no biases)")
    _refuse_sliding_window(hf, path)
    dim, n_heads = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or dim // n_heads
    rope_base, scaling = _read_rope(hf, path)
    return ModelConfig(
        preset="tiny",
        vocab_size=hf["vocab_size"],
        dim=dim,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        ffn_dim=hf["intermediate_size"],
        max_seq_len=hf["max_position_embeddings"],
        rope_base=rope_base,
        rope_scaling=scaling,
        norm_eps=hf["rms_norm_eps"],
        tie_embeddings=hf.get("tie_word_embeddings", False),
        init_std=hf.get("initializer_range", 0.02),
        head_dim_override=None if head_dim * n_heads == dim else head_dim,
        qkv_bias=family == "qwen2" or (family == "llama" and bool(hf.get("attention_bias"))),
        family=family,
    )


def hf_config(cfg: ModelConfig, special_ids: dict[str, int | list[int] | None] | None = None):
    """The ``transformers`` config of ``cfg.family`` (``LlamaConfig``, ``MistralConfig``, ``Qwen2Config``)."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    ids = special_ids or {}
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_base}
    if cfg.rope_scaling is not None:
        rope = cfg.rope_scaling.model_dump() | {"rope_theta": cfg.rope_base}
    common: dict[str, Any] = dict(
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
        rope_parameters=rope,
        tie_word_embeddings=cfg.tie_embeddings,
        hidden_act="silu",
        initializer_range=cfg.init_std,
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        pad_token_id=ids.get("pad"),
        dtype="float32",
    )
    if cfg.family == "mistral":
        return MistralConfig(**common, architectures=["MistralForCausalLM"], sliding_window=None)
    if cfg.family == "qwen2":
        return Qwen2Config(
            **common, architectures=["Qwen2ForCausalLM"], use_sliding_window=False, sliding_window=None
        )
    return LlamaConfig(
        **common, architectures=["LlamaForCausalLM"], attention_bias=cfg.qkv_bias, mlp_bias=False
    )


def _read_rope(hf: dict[str, Any], path: Path) -> tuple[float, RopeScaling | None]:
    """The rotary base and scaling from ``rope_parameters`` (transformers 5) or ``rope_theta`` +
    ``rope_scaling`` (transformers 4, most published checkpoints; it wins, as in transformers)."""
    field = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
    rope = dict(hf.get(field) or {})
    if any(isinstance(value, dict) for value in rope.values()):
        raise ValueError(f"{path}: {field} per layer type is not supported (one rotary for every layer)")
    base = float(rope.pop("rope_theta", hf.get("rope_theta", 10_000.0)))
    kind = rope.pop("rope_type", rope.pop("type", "default"))
    if rope.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError(f"{path}: partial_rotary_factor is not supported (rotary over the whole head only)")
    if kind == "default":
        return base, None
    if kind != "llama3":
        raise ValueError(f"{path}: {field}.rope_type {kind!r} is not supported (only 'default' and 'llama3')")
    rope.setdefault("original_max_position_embeddings", hf["max_position_embeddings"])
    known = set(RopeScaling.model_fields)
    try:
        return base, RopeScaling(**{k: v for k, v in rope.items() if k in known})
    except ValidationError as exc:
        raise ValueError(f"{path}: {field} (rope_type 'llama3'): {exc}") from exc


def _refuse_sliding_window(hf: dict[str, Any], path: Path) -> None:
    window, positions = hf.get("sliding_window"), hf["max_position_embeddings"]
    if window is None or window >= positions:
        return
    if hf["model_type"] == "mistral":
        raise ValueError(
            f"{path}: sliding_window {window} < max_position_embeddings {positions}: "
            "sliding-window attention is not supported (full attention differs past the window)"
        )
    if hf["model_type"] == "qwen2" and hf.get("use_sliding_window"):
        layer_types = hf.get("layer_types") or [
            "sliding_attention" if i >= hf.get("max_window_layers", 28) else "full_attention"
            for i in range(hf["num_hidden_layers"])
        ]
        if any(kind != "full_attention" for kind in layer_types):
            raise ValueError(
                f"{path}: use_sliding_window true with sliding_window {window} < max_position_embeddings "
                f"{positions}: sliding-window attention is not supported"
            )
