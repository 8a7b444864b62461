"""LoRA adapters on a trained network, through PEFT: the one place hcx touches PEFT.

A stage with ``lora:`` in its recipe section (SFT's policy, the reward model, PPO's policy
and value network) calls :func:`add_adapters` on each network it trains, after loading and
before sharding. PEFT's ``inject_adapter_in_model`` wraps the named linear layers in place
(``attention.wq`` ... are matched by the last part of their names) and leaves only the
adapters trainable; a randomly initialised head (the reward model's, the value network's)
is named in ``trainable`` and trains whole. The optimizer then holds only those parameters,
and FSDP2 shards adapters with the block they sit in.

- :func:`adapters_off`: the network as its base model. PPO's frozen reference is the policy
  in this context, so it costs no second copy of the weights.
- :func:`merged_weights`: a state dict with every adapter merged into its weight
  (:func:`hcx.model.lora.merge_lora`); Hugging Face exports and the rollout engine's copy of
  the policy get these, so both are plain models.

Checkpoints keep the whole module under PEFT's names (base and adapters) and record the
settings in ``hcx_meta.json``; :func:`hcx.model.load.load_model` merges them on load.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from hcx.model.lora import ADAPTER, merge_lora
from hcx.model.transformer import Transformer
from hcx.train.config import LoraConfig


def add_adapters(
    model: nn.Module, cfg: LoraConfig | None, seed: int, trainable: Sequence[str] = ()
) -> nn.Module:
    """``model`` with LoRA adapters in its target layers and only they (and ``trainable`` submodules)
    requiring gradients; unchanged when ``cfg`` is None. ``A`` is drawn from ``seed`` alone, so every
    data-parallel rank and every resumed run starts from the same adapters."""
    if cfg is None:
        return model
    import peft  # imports transformers: only stages that train adapters pay for it

    for module in model.modules():
        if isinstance(module, Transformer) and module.cfg.tie_embeddings and "output" in cfg.target_modules:
            raise ValueError(
                "lora.target_modules: output is tied to the embeddings in this model; leave it out"
            )
    config = peft.LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)
    return model


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block ``model`` computes as its base model (PEFT's own switch, layer by layer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def merged_weights(state: dict[str, Tensor], cfg: LoraConfig | None) -> dict[str, Tensor]:
    """``state`` (a whole, gathered state dict) with the adapters merged in; unchanged without LoRA."""
    return merge_lora(state, cfg.scaling) if cfg is not None else state
