"""The decoder's linear layer rounds rows up on the CPU in half precision, with unchanged results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hcx.model.linear import EXACT_BELOW, Linear, bucket_rows


def test_buckets_cover_every_row_count_with_little_padding() -> None:
    sizes = {bucket_rows(n) for n in range(1, 8193)}
    for n in range(1, 8193):
        padded = bucket_rows(n)
        assert padded == n if n < EXACT_BELOW else n <= padded <= n * 1.125
        assert bucket_rows(padded) == padded
    # exact below 16, then eight sizes per octave up to 8192
    assert len(sizes) == EXACT_BELOW - 1 + 8 * 9 + 1


@pytest.mark.parametrize("mode", ["bfloat16 weights", "float32 under autocast"])
def test_bucketed_rows_give_the_unpadded_products_and_gradients(mode: str) -> None:
    torch.manual_seed(0)
    dtype = torch.bfloat16 if mode == "bfloat16 weights" else torch.float32
    ours = Linear(96, 40).to(dtype)
    plain = nn.Linear(96, 40).to(dtype)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 37, 96, dtype=dtype)  # 111 rows, padded to 112
    assert bucket_rows(111) == 112
    results = []
    for layer in (ours, plain):
        inputs = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "bfloat16 weights"):
            out = layer(inputs)
        out.float().square().sum().backward()
        results.append((out, inputs.grad, layer.weight.grad, layer.bias.grad))
    for got, want in zip(*results, strict=True):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=2e-2, atol=1e-2)


def test_float32_takes_the_plain_path() -> None:
    """float32 products do not build kernels per shape: no padding, bit-for-bit nn.Linear."""
    torch.manual_seed(0)
    ours = Linear(64, 16)
    x = torch.randn(111, 64)
    assert torch.equal(ours(x), nn.functional.linear(x, ours.weight, ours.bias))
