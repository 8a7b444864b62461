"""Model sizes (SPEC §3): named configurations and the numbers the model answers about itself.

The report gives no sizes for HCX-S and HCX-L, so the presets below are our documented
choices: Llama-style shapes at the 7B (HCX-S, "lightweight") and 70B (HCX-L) scale with a
100,000-token vocabulary (SPEC §2), grouped-query attention with 8 key/value heads, and a
32,768 context (the long stage of SPEC §4). ``tiny`` trains on a CPU in minutes; ``small``
is a GPT-2-small-sized model for a single GPU.
"""

from __future__ import annotations

from typing import Any, Literal

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


class RopeScaling(Section):
    """Llama 3.1's rotary frequency scaling ("llama3"): long wavelengths are stretched by ``factor``,
    short ones kept, and the band between the two wavelength limits interpolated."""

    rope_type: Literal["llama3"] = "llama3"
    factor: float = Field(gt=0)
    low_freq_factor: float = Field(gt=0)
    high_freq_factor: float = Field(gt=0)
    original_max_position_embeddings: int = Field(
        gt=0, description="the context the base model was trained at"
    )

    @model_validator(mode="after")
    def _check_band(self) -> RopeScaling:
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"high_freq_factor {self.high_freq_factor} must exceed low_freq_factor {self.low_freq_factor}"
            )
        return self


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
    head_dim_override: int | None = Field(
        default=None,
        gt=0,
        description="per-head width when it is not dim // n_heads (some Hugging Face models)",
    )
    qkv_bias: bool = Field(
        default=False, description="biases on the query, key and value projections (Qwen2)"
    )
    rope_scaling: RopeScaling | None = None
    family: Literal["llama", "mistral", "qwen2"] = Field(
        default="llama", description="the Hugging Face architecture the model exports as"
    )

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
        if self.head_dim_override is None and self.dim % self.n_heads:
            raise ValueError(
                f"dim {self.dim} is not divisible by n_heads {self.n_heads} (or set head_dim_override)"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head dimension {self.head_dim} must be even for rotary embeddings")
        if self.family == "qwen2" and not self.qkv_bias:
            raise ValueError("family 'qwen2' has query/key/value biases: set qkv_bias: true")
        if self.family == "mistral" and self.qkv_bias:
            raise ValueError(
                "family 'mistral' has no attention biases: set qkv_bias: false or another family"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.head_dim_override or self.dim // self.n_heads

    def num_params(self, embeddings: bool = True) -> int:
        """Exact parameter count of :class:`hcx.model.transformer.Transformer` with this config."""
        if self.vocab_size is None:
            raise ValueError("vocab_size is not set yet (it comes from the tokenizer)")
        hd = self.head_dim
        attention = self.dim * hd * (2 * self.n_heads + 2 * self.n_kv_heads)
        if self.qkv_bias:
            attention += hd * (self.n_heads + 2 * self.n_kv_heads)
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
        ``12·L·d·T`` counts the full T×T score and value products, as PaLM and nanochat do
        (``d`` the query width ``n_heads·head_dim``, the model dim unless ``head_dim_override``).
        """
        query_width = self.n_heads * self.head_dim
        return 6 * self.num_params(embeddings=False) + 12 * self.n_layers * query_width * seq_len
