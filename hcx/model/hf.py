"""Weights to and from the Hugging Face Llama, Mistral and Qwen2 formats (SPEC §8: the
ecosystem can use the model, and we can start from its models).

Our decoder is architecturally a Llama (RMSNorm pre-norm, GQA, SwiGLU, rotary with the
half-split layout), so conversion is a renaming of weights plus a ``config.json``
(:mod:`hcx.model.hf_config`, which also says what is refused); no weight permutation is
needed. Imports read safetensors or ``pytorch_model.bin``, single or sharded; exports write
one ``model.safetensors`` in the family the config names. The tokenizer files travel with the
weights so that ``AutoModelForCausalLM`` / ``AutoTokenizer`` load the directory as it is.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from hcx.model.hf_config import hf_config, hf_model_config
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
    "attention.wq.bias": "self_attn.q_proj.bias",
    "attention.wk.bias": "self_attn.k_proj.bias",
    "attention.wv.bias": "self_attn.v_proj.bias",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_OUTPUT_BIAS = "self_attn.o_proj.bias"
_ROTARY_BUFFER = "rotary_emb.inv_freq"
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


def export_hf(
    model: Transformer,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` (of ``model.cfg.family``) and the tokenizer
    files to ``out_dir``.

    ``model`` must hold full (unsharded) weights: gather them first when training sharded.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    weights = {}
    for name, tensor in model.state_dict().items():
        if cfg.tie_embeddings and name == "output.weight":
            continue
        weights[to_hf_name(name)] = tensor.detach().to(dtype).contiguous().cpu()
    if cfg.family == "llama" and cfg.qkv_bias:
        # Llama's attention_bias biases o_proj too; ours is zero.
        for i in model.layers:
            weights[f"model.layers.{i}.{_OUTPUT_BIAS}"] = torch.zeros(cfg.dim, dtype=dtype)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    special_ids = _special_ids(Path(tokenizer_dir)) if tokenizer_dir else None
    hf_config(cfg, special_ids).save_pretrained(out)
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), out, special_ids or {})
    return out


def import_hf(hf_dir: str | Path, extra: dict[str, Tensor] | None = None) -> Transformer:
    """Load a Llama, Mistral or Qwen2 directory (ours or a published checkpoint; a hub id is
    fetched, see :func:`resolve_model_dir`) as a :class:`Transformer`.

    With ``extra`` given, weights that are not the decoder's (the ``score`` head of a
    ``LlamaForSequenceClassification`` export, say) are put there instead of refused, and a
    directory without ``lm_head`` gives a model without an output layer (returning hidden states).
    """
    hf_dir = resolve_model_dir(hf_dir)
    cfg = hf_model_config(hf_dir)
    model = Transformer(cfg)
    weights = {}
    for file in checkpoint_files(hf_dir):
        for name, tensor in _read_tensors(file).items():
            if name.endswith(_ROTARY_BUFFER):
                continue
            if name.endswith(_OUTPUT_BIAS):
                if tensor.any():
                    raise ValueError(
                        f"{hf_dir / 'config.json'}: attention_bias: {name} is not zero, and the decoder "
                        "has no output-projection bias"
                    )
                continue
            try:
                weights[from_hf_name(name)] = tensor
            except KeyError:
                if extra is None:
                    raise
                extra[name] = tensor
    if cfg.tie_embeddings:
        weights["output.weight"] = weights["tok_embeddings.weight"]
    elif extra is not None and "output.weight" not in weights:
        model.output = None
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True)
    return model


def checkpoint_files(hf_dir: Path) -> list[Path]:
    """The weight files of a directory: safetensors (sharded by an index, or not) before
    ``pytorch_model.bin`` (likewise)."""
    safetensors_index = hf_dir / "model.safetensors.index.json"
    bin_index = hf_dir / "pytorch_model.bin.index.json"
    if safetensors_index.is_file():
        return _shards(safetensors_index)
    if files := sorted(hf_dir.glob("*.safetensors")):
        return files
    if bin_index.is_file():
        return _shards(bin_index)
    if (hf_dir / "pytorch_model.bin").is_file():
        return [hf_dir / "pytorch_model.bin"]
    raise FileNotFoundError(f"{hf_dir}: no weights (*.safetensors or pytorch_model.bin)")


def resolve_model_dir(path: str | Path) -> Path:
    """``path`` itself unless it is missing and looks like a hub id ("org/name"): then the
    directory ``huggingface_hub`` downloads (config, tokenizer and weights, safetensors if any)."""
    local = Path(path)
    if local.is_dir() or not _HUB_ID.match(str(path)):
        return local
    from huggingface_hub import snapshot_download

    files = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]
    try:
        fetched = Path(snapshot_download(str(path), allow_patterns=files))
        if not any(fetched.glob("*.safetensors")):
            fetched = Path(snapshot_download(str(path), allow_patterns=[*files, "pytorch_model*.bin"]))
    except (OSError, ValueError) as exc:  # every hub error (network, missing repo, bad id) is one of these
        raise FileNotFoundError(
            f"{path}: not a local directory and could not be fetched from the hub: {exc}"
        ) from exc
    return fetched


def _shards(index: Path) -> list[Path]:
    return [index.parent / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]


def _read_tensors(file: Path) -> dict[str, Tensor]:
    if file.suffix == ".safetensors":
        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)


def _special_ids(tokenizer_dir: Path) -> dict[str, int | list[int] | None]:
    """bos/eos/pad ids: an hcx tokenizer's specials, or for another tokenizer the tokens its
    ``tokenizer_config.json`` / ``special_tokens_map.json`` name (None where neither does)."""
    from hcx.tokenizer import specials

    tok = _load_tokenizer(tokenizer_dir)
    eot, pad = tok.token_to_id(specials.END_OF_TEXT), tok.token_to_id(specials.PAD)
    if (eot, pad) != (0, 1):  # hcx specials are the vocabulary's first ids, in SPECIAL_TOKENS order
        return {role: _declared_id(tokenizer_dir, tok, role) for role in ("bos", "eos", "pad")}
    end_of_turn = tok.token_to_id(specials.END_OF_TURN)
    # Generation ends a document or an assistant turn, whichever comes first (chat models stop at the turn).
    eos = [eot, end_of_turn] if end_of_turn is not None else eot
    return {"bos": eot, "eos": eos, "pad": pad}


def _declared_id(tokenizer_dir: Path, tok, role: str) -> int | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = tokenizer_dir / name
        token = json.loads(path.read_text()).get(f"{role}_token") if path.is_file() else None
        if isinstance(token, dict):
            token = token.get("content")
        if isinstance(token, str) and tok.token_to_id(token) is not None:
            return tok.token_to_id(token)
    return None


def _load_tokenizer(tokenizer_dir: Path):
    from tokenizers import Tokenizer

    source = tokenizer_dir / "tokenizer.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: tokenizer.json not found")
    return Tokenizer.from_file(str(source))


def _copy_tokenizer(tokenizer_dir: Path, out: Path, ids: dict[str, int | list[int] | None]) -> None:
    tok = _load_tokenizer(tokenizer_dir)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, out / name)
    if not (out / "tokenizer_config.json").is_file():
        names = {}
        for role, value in ids.items():
            first = value[0] if isinstance(value, list) else value
            names[role] = tok.id_to_token(first) if first is not None else None
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": names.get("bos"),
            "eos_token": names.get("eos"),
            "pad_token": names.get("pad"),
            "model_max_length": 1_000_000_000,
            "clean_up_tokenization_spaces": False,
        }
        (out / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))
