"""The hcx decoder (SPEC §3): architecture, attention contexts, named sizes, loading and conversion."""

from hcx.model.attention import AttentionContext, Causal, DocumentCausal, PagedKV
from hcx.model.config import PRESETS, ModelConfig
from hcx.model.transformer import Transformer

__all__ = [
    "PRESETS",
    "AttentionContext",
    "Causal",
    "DocumentCausal",
    "ModelConfig",
    "PagedKV",
    "Transformer",
]
