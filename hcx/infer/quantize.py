"""Weight-only int8 for the inference engine (issue 19): ``hcx serve --quantize int8``.

What is quantized: every ``nn.Linear`` of the decoder blocks (attention ``wq wk wv wo``, MLP
``w1 w2 w3``) and the output head, each weight row to int8 with its own float scale
(symmetric, ``max|row| / 127``); activations stay in the model's dtype. What stays: the token
embeddings (a lookup reads one row per token, there is no matrix product to speed up, and the
engine takes its cache dtype from them), a head tied to them (it shares their storage, so an
int8 copy would add memory), the norms and biases (vectors).

Why not torchao: torchao 0.18's ``Int8WeightOnlyConfig`` works with this model, but on CPU its
linear converts the whole int8 weight to the activation dtype and then multiplies, every
call. Measured on one thread of the 2-core CPU box (AVX-512 and AMX): the tiny model's engine
generated ~20 % fewer tokens/s than unquantized, and one call on a 4096×14336 matrix (an
hcx-s MLP) took ~80 ms against 7-15 ms in bfloat16. Here the product runs in torch's fused
``_weight_int8pack_mm`` (int8 weights, bfloat16/float16 activations, CPU) when a call has at
most :data:`FUSED_MAX_ROWS` rows — decoding: ~3 ms for that matrix at one row, 2.3x faster than
bfloat16 — and otherwise (prefill, scoring, float32 activations, GPUs) dequantizes the weight
in slices of about a million entries, each multiplied at once, instead of the whole matrix:
converting into fresh memory is what made the whole-matrix conversion slow (73 ms against
17 ms into memory already mapped), and a slice is reused while it is in cache. The fused
kernel is private and, in bfloat16, returned garbage or crashed for ``in_features`` not a
multiple of 16, so it is used only for multiples of 32.
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Quantization = Literal["none", "int8"]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)

FUSED_MAX_ROWS = 16  # above this, measured, dequantizing in slices beats the fused kernel
SLICE_ENTRIES = 1 << 20

M = TypeVar("M", bound=nn.Module)


class Int8Linear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` stored as int8 rows times a per-row scale."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        amax = weight.abs().amax(dim=1, keepdim=True).float()
        scale = (amax / 127).clamp(min=torch.finfo(weight.dtype).tiny).to(weight.dtype)
        qweight = torch.round(weight.float() / scale.float()).clamp(-127, 127).to(torch.int8)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.squeeze(1))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.slice_rows = max(1, SLICE_ENTRIES // self.in_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )

    def _fused(self, rows: Tensor) -> bool:
        return (
            rows.device.type == "cpu"
            and rows.dtype in (torch.bfloat16, torch.float16)
            and rows.shape[0] <= FUSED_MAX_ROWS
            and self.in_features % 32 == 0
        )

    def forward(self, x: Tensor) -> Tensor:
        rows = x.reshape(-1, self.in_features)
        scale = self.scale.to(x.dtype)
        if self._fused(rows):
            y = torch._weight_int8pack_mm(rows.contiguous(), self.qweight, scale)
        else:
            parts = [F.linear(rows, part.to(x.dtype)) for part in self.qweight.split(self.slice_rows)]
            y = (parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)) * scale
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


def quantize_weights(model: M, mode: Quantization) -> M:
    """Quantize ``model``'s linear layers in place (see the module docstring); returns ``model``."""
    if mode not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {mode!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if mode == "none":
        return model
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and id(child.weight) not in embeddings:
                setattr(parent, name, Int8Linear(child))
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and saved buffers, a tied tensor counted once."""
    tensors = {t.data_ptr(): t for t in model.state_dict().values() if t.numel()}
    return sum(t.numel() * t.element_size() for t in tensors.values())
