"""``compile: true`` (each block and the loss, in either compile mode) trains the same numbers as eager."""

from __future__ import annotations

import pytest
import torch

from hcx.model import ModelConfig, Transformer
from hcx.train.parallel import Mesh, parallelize
from hcx.train.pretrain import lm_loss


def loss_and_grads(
    model: Transformer, tokens: torch.Tensor, loss_fn
) -> tuple[float, dict[str, torch.Tensor]]:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(model(tokens[:, :-1]), tokens[:, 1:])
    loss.backward()
    grads = {name.replace("_orig_mod.", ""): p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    return float(loss), grads


@pytest.mark.parametrize("mode", ["max-autotune-no-cudagraphs"])
def test_compiled_step_matches_eager(mode: str) -> None:
    cfg = ModelConfig(preset="tiny", dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=176, vocab_size=256)
    eager = Transformer(cfg)
    eager.init_weights(seed=0)
    compiled = Transformer(cfg)
    compiled.load_state_dict(eager.state_dict())
    compiled = parallelize(compiled, Mesh(mesh=None), compile=True, compile_mode=mode)
    tokens = torch.randint(0, 256, (4, 65), generator=torch.Generator().manual_seed(0))

    want_loss, want = loss_and_grads(eager, tokens, lm_loss)
    got_loss, got = loss_and_grads(compiled, tokens, torch.compile(lm_loss, mode=mode))
    assert got_loss == pytest.approx(want_loss, rel=1e-2)
    assert got.keys() == want.keys()
    for name, grad in want.items():
        error = (got[name].float() - grad.float()).norm() / grad.float().norm()
        assert error < 0.05, f"{name}: relative gradient error {error:.3g}"
