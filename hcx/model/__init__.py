"""The hcx decoder (SPEC §3): architecture, named sizes, Hugging Face conversion."""

from hcx.model.config import PRESETS, ModelConfig
from hcx.model.transformer import KVCache, Transformer

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer"]
