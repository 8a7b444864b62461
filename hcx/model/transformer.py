"""The hcx decoder (SPEC §3): rotary positions, RMSNorm pre-normalization, grouped-query
attention, SwiGLU MLP, ``scaled_dot_product_attention`` (flash kernels where available).

The file holds only the architecture. Sharding (FSDP2, tensor and pipeline parallel) and
activation checkpointing are applied from outside by :mod:`hcx.train.parallel`; conversion
to and from Hugging Face Llama lives in :mod:`hcx.model.hf`. Layers sit in a ``ModuleDict``
keyed by index so a pipeline stage can drop the ones it does not own and keep stable names;
a missing ``tok_embeddings``/``norm``/``output`` makes the module a middle or first stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcx.model.config import ModelConfig


def rope_tables(head_dim: int, max_seq_len: int, base: float) -> tuple[Tensor, Tensor]:
    """cos/sin tables of shape (max_seq_len, head_dim), halves duplicated (the Llama layout)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, T, H, D) by per-position angles; ``cos``/``sin`` broadcast as (B|1, T, 1, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).type_as(x)


def document_causal_mask(doc_ids: Tensor) -> Tensor:
    """(B, 1, T, T) boolean mask: a token sees earlier tokens of its own document only (SPEC §4)."""
    T = doc_ids.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    same_doc = doc_ids[:, :, None] == doc_ids[:, None, :]
    return (same_doc & causal)[:, None]


class KVCache:
    """Keys and values of past positions for incremental decoding (used by the serving engine)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        shape = (cfg.n_layers, batch_size, max_len, cfg.n_kv_heads, cfg.head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        end = self.length + k.shape[1]
        self.keys[layer, :, self.length : end] = k
        self.values[layer, :, self.length : end] = v
        return self.keys[layer, :, :end], self.values[layer, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, cache: KVCache | None
    ) -> Tensor:
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = apply_rotary(self.wq(x).view(B, T, -1, self.head_dim), *rope)
        k = apply_rotary(self.wk(x).view(B, T, -1, self.head_dim), *rope)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        if cache is not None:
            k, v = cache.update(self.layer_id, k, v)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=True)
        return self.wo(y.transpose(1, 2).reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], mask: Tensor | None, cache: KVCache | None = None
    ):
        h = x + self.attention(self.attention_norm(x), rope, mask, cache)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): Block(cfg, i) for i in range(cfg.n_layers)})
        self.norm: nn.RMSNorm | None = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output: nn.Linear | None = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        self.rope_base = cfg.rope_base
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def set_rope_base(self, base: float) -> None:
        """Change the rotary base in place (the long-context stage of SPEC §4 raises it)."""
        self.rope_base = base
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.max_seq_len, base)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, std) everywhere; residual output projections scaled by 1/sqrt(2·layers) (GPT-2)."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        std, out_std = self.cfg.init_std, self.cfg.init_std / (2 * self.cfg.n_layers) ** 0.5
        for name, param in self.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0)
            else:
                scale = out_std if name.endswith(("wo.weight", "w2.weight")) else std
                param.copy_(torch.randn(param.shape, generator=generator) * scale)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        doc_ids: Tensor | None = None,
        cache: KVCache | None = None,
        hidden: bool = False,
    ) -> Tensor:
        """Logits (B, T, vocab) for token ids (B, T), or hidden states when this is a pipeline stage.

        ``positions`` restart at 0 for each packed document; ``doc_ids`` (same shape) adds a
        document mask so packed documents do not attend to each other. With a ``cache``,
        ``tokens`` continue the cached prefix. ``hidden=True`` returns the final normalised
        hidden states, for callers that need logits at a few positions only (PPO's responses).
        """
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        T = h.shape[1]
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=h.device)[None]
        rope = (self.rope_cos[positions][:, :, None], self.rope_sin[positions][:, :, None])
        mask = None
        if doc_ids is not None:
            mask = document_causal_mask(doc_ids)
        elif cache is not None and (start > 0 or T == 1):
            mask = torch.ones(T, start + T, dtype=torch.bool, device=h.device).tril(diagonal=start)
        for layer in self.layers.values():
            h = layer(h, rope, mask, cache)
        if cache is not None:
            cache.length += T
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None and not hidden else h
