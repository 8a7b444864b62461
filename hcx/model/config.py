"""Model sizes (SPEC §3): named configurations and the numbers the model answers about itself.

The report gives no sizes for HCX-S and HCX-L, so the presets below are our documented
choices: Llama-style shapes at the 7B (HCX-S, "lightweight") and 70B (HCX-L) scale with a
100,000-token vocabulary (SPEC §2), grouped-query attention with 8 key/value heads, and a
32,768 context (the long stage of SPEC §4). ``tiny`` trains on a CPU in minutes; ``small``
is a GPT-2-small-sized model for a single GPU.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from hcx.config import Section

VOCAB_MULTIPLE = 64


def padded_vocab_size(tokens: int) -> int:
    """A tokenizer's vocabulary rounded up to a multiple of 64 (matmul- and tensor-parallel-friendly)."""
    return -(-tokens // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=352, max_seq_len=1024),
    "small": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=32768),
    "hcx-s": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336, max_seq_len=32768),
    "hcx-l": dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, ffn_dim=28672, max_seq_len=32768),
}


class ModelConfig(Section):
    """Shape of the decoder. ``preset`` fills every field the recipe does not set itself."""

    preset: str = "hcx-s"
    vocab_size: int | None = Field(
        default=100_000, description="None: the tokenizer's vocabulary, rounded up to a multiple of 64"
    )
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int = 8
    ffn_dim: int = 14336
    max_seq_len: int = 32768
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    init_std: float = 0.02

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = data.get("preset", "hcx-s")
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return {**PRESETS[name], **data}

    @model_validator(mode="after")
    def _check_shapes(self) -> ModelConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ValueError("head dimension must be even for rotary embeddings")
        return self

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def num_params(self, embeddings: bool = True) -> int:
        """Exact parameter count of :class:`hcx.model.transformer.Transformer` with this config."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set yet (it comes from the tokenizer)")
        hd = self.head_dim
        attention = self.dim * hd * (2 * self.n_heads + 2 * self.n_kv_heads)
        block = attention + 3 * self.dim * self.ffn_dim + 2 * self.dim
        embedding = self.vocab_size * self.dim
        output = 0 if self.tie_embeddings else self.vocab_size * self.dim
        total = self.n_layers * block + self.dim + output + (embedding if embeddings else 0)
        if not embeddings and self.tie_embeddings:
            total += embedding  # the tied matrix still does the output projection's work
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6 per matmul weight plus attention scores (PaLM appendix B).

        The embedding lookup is not a matmul, the output projection is; the attention term
        ``12·L·d·T`` counts the full T×T score and value products, as PaLM and nanochat do.
        """
        return 6 * self.num_params(embeddings=False) + 12 * self.n_layers * self.dim * seq_len
