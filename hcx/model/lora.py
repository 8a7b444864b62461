"""LoRA-adapted weights as plain weights: ``W + scaling · B A`` (what exports and rollout copies hold).

Training injects the adapters with PEFT (:mod:`hcx.train.lora`), which renames an adapted
layer's weight ``<layer>.base_layer.weight`` and adds ``<layer>.lora_A.default.weight``
(rank × in) and ``<layer>.lora_B.default.weight`` (out × rank). This module knows only those
names, so the loader merges a LoRA training checkpoint without PEFT; it owns no training.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

ADAPTER = "default"
BASE = ".base_layer."


def has_adapters(state: Mapping[str, Tensor]) -> bool:
    return any(BASE in name for name in state)


def merge_lora(state: Mapping[str, Tensor], scaling: float) -> dict[str, Tensor]:
    """``state`` with every adapter folded into the weight it adapts, under the plain layer names.

    The product is taken in float32 and cast back to the base weight's dtype.
    """
    merged: dict[str, Tensor] = {}
    for name, value in state.items():
        if ".lora_A." in name or ".lora_B." in name:
            continue
        layer, base, leaf = name.partition(BASE)
        if base and leaf == "weight":
            a = state[f"{layer}.lora_A.{ADAPTER}.weight"].float()
            b = state[f"{layer}.lora_B.{ADAPTER}.weight"].float()
            value = (value.float() + scaling * (b @ a)).to(value.dtype)
        merged[f"{layer}.{leaf}" if base else name] = value
    return merged
