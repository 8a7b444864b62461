from __future__ import annotations

import math

import pytest
import torch

from hcx.train.config import OptimConfig
from hcx.train.optim import build_optimizer, build_scheduler, lr_multiplier


def test_warmup_then_cosine_to_min_ratio():
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.1, schedule="cosine")
    assert lr_multiplier(0, 110, cfg) == pytest.approx(0.1)
    assert lr_multiplier(9, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(10, 110, cfg) == pytest.approx(1.0)
    assert lr_multiplier(60, 110, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_multiplier(110, 110, cfg) == pytest.approx(0.1)


def test_wsd_is_flat_then_decays_linearly():
    cfg = OptimConfig(warmup_steps=10, min_lr_ratio=0.0, schedule="wsd", decay_fraction=0.2)
    assert [lr_multiplier(s, 100, cfg) for s in (10, 50, 79)] == [1.0, 1.0, 1.0]
    assert lr_multiplier(90, 100, cfg) == pytest.approx(0.5)
    assert lr_multiplier(100, 100, cfg) == pytest.approx(0.0)


def test_optimizer_decays_matrices_only_and_scheduler_drives_lr():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    cfg = OptimConfig(lr=1e-2, warmup_steps=4)
    optimizer = build_optimizer([model], cfg)
    decay, no_decay = optimizer.param_groups
    assert [p.dim() for p in decay["params"]] == [2] and decay["weight_decay"] == cfg.weight_decay
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    scheduler = build_scheduler(optimizer, 20, cfg)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25e-2)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-2)
