"""The decoder's linear layer: ``nn.Linear`` with its row count rounded up on the CPU in bfloat16.

On the CPU, torch multiplies bfloat16 (and float16) through oneDNN, which builds and caches a
kernel for every new matrix shape: about 1.4 ms on this project's 2-core Xeon, where the
multiplication itself of a few thousand tiny-model rows takes tens of microseconds. Training
on packed batches meets a handful of shapes; PPO's rollouts, evaluation's contexts and the
engine's decode batches meet a new row count at almost every call, and paid that build each
time (measured in PPO with 2 epochs: the first epoch's backward, over an iteration's new
shapes, took 0.82 s against the second epoch's 0.53 s over the same shapes).

Rounding the rows (tokens) up to one of eight sizes per octave bounds the shapes to a few
dozen, at most 12.5 % extra rows (6 % on average); the padding rows are zeros and are cut
from the output, so the real rows get the unpadded product's results (up to rounding: oneDNN
may block a padded shape differently). Elsewhere
(GPUs, float32, tensor-parallel shards) this is ``nn.Linear`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXACT_BELOW = 16
"""Row counts below this stay exact (decode batches of a few requests)."""

HALF = (torch.bfloat16, torch.float16)


def bucket_rows(rows: int) -> int:
    """``rows`` rounded up to one of eight sizes per octave (exact below ``EXACT_BELOW``)."""
    if rows < EXACT_BELOW:
        return rows
    step = 1 << (rows.bit_length() - 4)
    return -(-rows // step) * step


def builds_kernels_per_shape(x: Tensor, weight: Tensor) -> bool:
    """Whether this product runs through oneDNN's per-shape kernels (CPU, half precision)."""
    if x.device.type != "cpu" or type(weight) not in (nn.Parameter, Tensor):  # DTensor shards: no
        return False
    return x.dtype in HALF or (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") in HALF)


class Linear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
        padded = bucket_rows(rows)
        if padded == rows or not builds_kernels_per_shape(x, self.weight):
            return super().forward(x)
        flat = F.pad(x.reshape(rows, x.shape[-1]), (0, 0, 0, padded - rows))
        return F.linear(flat, self.weight, self.bias)[:rows].view(*x.shape[:-1], -1)
