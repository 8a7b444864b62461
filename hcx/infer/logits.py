"""What a request chooses its next token from: the model's logits after its own adjustments.

OpenAI's ``presence_penalty`` and ``frequency_penalty`` lower the logit of every token the
request already generated (by a constant, and by its count), ``logit_bias`` adds to chosen
tokens' logits, and a grammar (:mod:`hcx.infer.grammar`) forbids tokens outside it. These
change only the choice: the log-probabilities a request reports remain the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from hcx.infer.request import Request
from hcx.infer.sampling import full_precision


def adjust_logits(logits: Tensor, requests: Sequence[Request]) -> Tensor | None:
    """Row ``i`` of ``logits`` (B, V) as request ``i`` chooses from; None when no request adjusts."""
    rows = [i for i, r in enumerate(requests) if r.params.adjusts_logits]
    if not rows:
        return None
    adjusted = full_precision(logits).clone()
    vocab = adjusted.shape[-1]
    for i in rows:
        request, row = requests[i], adjusted[i]
        params = request.params
        if (params.presence_penalty or params.frequency_penalty) and request.output_ids:
            generated = torch.tensor(request.output_ids, device=row.device)
            counts = torch.bincount(generated, minlength=vocab)[:vocab].to(row.dtype)
            row -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0)
        if params.logit_bias:
            ids = torch.tensor(list(params.logit_bias), device=row.device)
            row[ids] += torch.tensor(list(params.logit_bias.values()), device=row.device, dtype=row.dtype)
        if request.grammar is not None:
            request.grammar.restrict(row)
    return adjusted
