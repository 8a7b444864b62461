"""The hcx decoder (SPEC §3): rotary positions, RMSNorm pre-normalization, grouped-query
attention, SwiGLU MLP. This is the one forward of hcx: training (causal or packed), the
inference engine (paged KV cache), scoring and evaluation all call it, and differ only in
the attention context they pass (:mod:`hcx.model.attention`).

The file holds only the architecture. Sharding (FSDP2, tensor and pipeline parallel) and
activation checkpointing are applied from outside by :mod:`hcx.train.parallel`; conversion
to and from Hugging Face Llama lives in :mod:`hcx.model.hf`. Layers sit in a ``ModuleDict``
keyed by index so a pipeline stage can drop the ones it does not own and keep stable names;
a missing ``tok_embeddings``/``norm``/``output`` makes the module a middle or first stage.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcx.model.attention import AttentionContext, Causal, DocumentCausal
from hcx.model.config import ModelConfig, RopeScaling
from hcx.model.linear import Linear


def rope_tables(
    head_dim: int, max_seq_len: int, base: float, scaling: RopeScaling | None = None
) -> tuple[Tensor, Tensor]:
    """cos/sin tables of shape (max_seq_len, head_dim), halves duplicated (the Llama layout)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is not None:
        inv_freq = llama3_scaled(inv_freq, scaling)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().float(), angles.sin().float()


def llama3_scaled(inv_freq: Tensor, scaling: RopeScaling) -> Tensor:
    """Llama 3.1's frequency scaling: wavelengths shorter than ``original / high_freq_factor`` are
    kept, those longer than ``original / low_freq_factor`` divided by ``factor``, and in between

        f' = (1 - s)·f/factor + s·f,   s = (original / wavelength - low) / (high - low).
    """
    original = scaling.original_max_position_embeddings
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    wavelength = 2 * torch.pi / inv_freq
    smooth = ((original / wavelength - low) / (high - low)).clamp(0.0, 1.0)
    return (1 - smooth) * inv_freq / scaling.factor + smooth * inv_freq


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, T, H, D) by per-position angles; ``cos``/``sin`` broadcast as (B|1, T, 1, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x * cos + rotated * sin).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.layer_id = layer_id
        self.head_dim = cfg.head_dim
        self.wq = Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wk = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wv = Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=cfg.qkv_bias)
        self.wo = Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], context: AttentionContext) -> Tensor:
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = apply_rotary(self.wq(x).view(B, T, -1, self.head_dim), *rope)
        k = apply_rotary(self.wk(x).view(B, T, -1, self.head_dim), *rope)
        v = self.wv(x).view(B, T, -1, self.head_dim)
        y = context.attend(self.layer_id, q, k, v)
        return self.wo(y.reshape(B, T, -1))


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.w2 = Linear(cfg.ffn_dim, cfg.dim, bias=False)
        self.w3 = Linear(cfg.dim, cfg.ffn_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer_id: int):
        super().__init__()
        self.attention_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.attention = Attention(cfg, layer_id)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.feed_forward = FeedForward(cfg)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], context: AttentionContext) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, context)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings: nn.Embedding | None = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleDict({str(i): Block(cfg, i) for i in range(cfg.n_layers)})
        self.norm: nn.RMSNorm | None = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.output: Linear | None = Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_base, cfg.rope_scaling)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def set_rope_base(self, base: float) -> None:
        """Set the rotary base in the config and the tables (the long-context stage of SPEC §4 raises it).

        The config is the base's only home: checkpoints and exports write ``cfg.rope_base``.
        """
        self.cfg = self.cfg.model_copy(update={"rope_base": float(base)})
        self._fill_rope_tables()

    def _fill_rope_tables(self) -> None:
        """Compute the rotary tables from the config, in float32, on the buffers' device."""
        if self.rope_cos.device.type == "meta":
            return
        cos, sin = rope_tables(
            self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_base, self.cfg.rope_scaling
        )
        self.rope_cos = cos.to(self.rope_cos.device)
        self.rope_sin = sin.to(self.rope_sin.device)

    def _apply(self, fn, recurse: bool = True):
        """After ``.to()``, ``to_empty()`` and the like, the rotary tables are recomputed: a bfloat16
        model keeps float32 angles, and a model materialised from the meta device gets real ones."""
        super()._apply(fn, recurse)
        self._fill_rope_tables()
        return self

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, std) for matrices, residual output projections scaled by 1/sqrt(2·layers) (GPT-2);
        norms at one, biases at zero.

        Each parameter draws from its own generator, seeded by ``seed`` and the parameter's name,
        so a model sharded before initialisation (built on the meta device, then FSDP, tensor or
        pipeline parallel) gets exactly the numbers of the whole model on one process.
        """
        std, out_std = self.cfg.init_std, self.cfg.init_std / (2 * self.cfg.n_layers) ** 0.5
        for name, param in self.named_parameters():
            name = canonical_name(name)
            if param.dim() == 1:
                param.fill_(0.0 if name.endswith(".bias") else 1.0)
                continue
            scale = out_std if name.endswith(("wo.weight", "w2.weight")) else std
            generator = torch.Generator().manual_seed(_param_seed(seed, name))
            full = torch.randn(param.shape, generator=generator) * scale  # a DTensor's shape is global
            _copy_local(param, full)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        doc_ids: Tensor | None = None,
        *,
        attention: AttentionContext | None = None,
        hidden: bool = False,
    ) -> Tensor:
        """Logits (B, T, vocab) for token ids (B, T), or hidden states when this is a pipeline stage.

        ``attention`` says which keys each query sees (:mod:`hcx.model.attention`); without it,
        ``doc_ids`` (B, T) make packed documents that do not attend to each other, with
        ``positions`` restarting at 0 for each, and otherwise each row is one causal sequence.
        (Positions and document ids are tensors so that pipeline schedules can split them into
        micro-batches.) ``hidden=True`` returns the final normalised hidden states, for callers
        that need logits at a few positions only (scoring, PPO's responses, the engine).
        """
        h = self.tok_embeddings(tokens) if self.tok_embeddings is not None else tokens
        if attention is None:
            if positions is None:
                positions = torch.arange(h.shape[1], device=h.device)[None]
            attention = DocumentCausal(doc_ids, positions) if doc_ids is not None else Causal(positions)
        positions = attention.positions
        rope = (self.rope_cos[positions][:, :, None], self.rope_sin[positions][:, :, None])
        for layer in self.layers.values():
            h = layer(h, rope, attention)
        h = self.norm(h) if self.norm is not None else h
        return self.output(h) if self.output is not None and not hidden else h


_WRAPPERS = ("_checkpoint_wrapped_module.", "_orig_mod.", "_fsdp_wrapped_module.")


def canonical_name(name: str) -> str:
    """A parameter's name without the wrappers that activation checkpointing or compile insert."""
    for wrapper in _WRAPPERS:
        name = name.replace(wrapper, "")
    return name


def _param_seed(seed: int | None, name: str) -> int:
    base = torch.initial_seed() if seed is None else seed
    return (base * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def _copy_local(param: Tensor, full: Tensor) -> None:
    """Write ``full`` (the whole parameter) into ``param``, or into this rank's shard of a DTensor."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(param, DTensor):
        shard = distribute_tensor(
            full.to(param.device), param.device_mesh, param.placements, src_data_rank=None
        )
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(full)
