"""Turning finished rollouts into PPO experience (SPEC §5.3).

Rollouts are right-padded into one batch; the frozen reference and the value network each
take one batched forward, the reward is scored, and everything is gathered into *response
coordinates* (B, R): column ``j`` is the ``j``-th generated token, predicted at sequence
position ``prompt_len - 1 + j``. The "old" log-probabilities are the behaviour policy's,
recorded by the engine as it sampled: with asynchronous rollouts the learner's policy may
already be a version ahead, and PPO's ratio must be taken against what actually sampled.
With a sampling temperature ``T`` every log-probability (behaviour, learner, reference) is of
``softmax(logits / T)``, the distribution the rollouts were actually drawn from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hcx.align.batching import right_pad
from hcx.align.losses import gae, kl_shaped_rewards, repeated_ngram_mask
from hcx.align.phase_clock import PhaseClock


@dataclass
class Rollout:
    """One sampled response, with the log-probabilities the generating (behaviour) policy gave it."""

    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    text: str
    version: int
    worker: int = 0  # which rollout worker generated it (Ray actor rank; 0 for the thread)


@dataclass
class Experience:
    """A batch of rollouts in response coordinates; every tensor is (B, R) unless noted."""

    tokens: Tensor  # (B, L) prompt + response, right-padded
    index: Tensor  # position in the shifted sequence of each response token
    mask: Tensor
    old_logprobs: Tensor
    ref_logprobs: Tensor
    values: Tensor
    rewards: Tensor
    advantages: Tensor
    returns: Tensor
    repeated: Tensor
    scores: Tensor  # (B,)
    staleness: Tensor  # (B,)
    workers: Tensor  # (B,) the rollout worker of each row

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def sequence_lengths(self) -> Tensor:
        """Prompt + response tokens of each row (the response starts after ``index[:, 0] + 1`` tokens)."""
        return self.index[:, 0] + 1 + self.mask.sum(-1).long()

    def to(self, device: torch.device) -> Experience:
        return Experience(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def select(self, rows: Tensor) -> Experience:
        """The given rows, cut to their own longest sequence and response (no padding carried over)."""
        part = Experience(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})
        width, responses = int(part.sequence_lengths.max()), max(1, int(part.mask.sum(-1).max()))
        for f in fields(part):
            value = getattr(part, f.name)
            if f.name == "tokens":
                setattr(part, f.name, value[:, :width])
            elif value.dim() == 2:
                setattr(part, f.name, value[:, :responses])
        part.index = part.index.clamp(max=width - 2)
        return part


def concat(parts: Sequence[Experience]) -> Experience:
    """One experience from several; sequences and responses padded to the widest."""
    out = {}
    for f in fields(Experience):
        tensors = [getattr(p, f.name) for p in parts]
        if tensors[0].dim() == 2:
            width = max(t.shape[1] for t in tensors)
            tensors = [F.pad(t, (0, width - t.shape[1])) for t in tensors]
        out[f.name] = torch.cat(tensors)
    return Experience(**out)


def layout(rollouts: Sequence[Rollout], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded tokens (B, L), response positions (B, R) in the shifted sequence, response mask."""
    tokens = right_pad([r.prompt_ids + r.response_ids for r in rollouts], pad_id)
    width = tokens.shape[1]
    response_width = max(1, max(len(r.response_ids) for r in rollouts))
    index = torch.zeros((len(rollouts), response_width), dtype=torch.long)
    mask = torch.zeros((len(rollouts), response_width))
    for row, rollout in enumerate(rollouts):
        n, start = len(rollout.response_ids), len(rollout.prompt_ids) - 1
        index[row] = (start + torch.arange(response_width)).clamp(max=width - 2)
        mask[row, :n] = 1.0
    return tokens, index, mask


def response_logits(
    model: nn.Module, tokens: Tensor, index: Tensor, temperature: float = 1.0, mask: Tensor | None = None
) -> Tensor:
    """Logits (B, R, V) that predict each response token, divided by the sampling temperature;
    with the response ``mask``, (N, V) at its N real tokens only, in row-major order.

    The LM head runs at those positions only: a batch's responses differ in length, and the
    head and the vocabulary-wide passes after it are most of a small model's work, so they
    skip the padding. PPO's policy is the distribution the rollouts were drawn from,
    ``softmax(logits / temperature)``, for the learner and the reference alike.
    """
    hidden = model(tokens, hidden=True)[:, :-1]
    hidden = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    if mask is not None:
        hidden = hidden[mask.bool()]
    logits = model.output(hidden).float()
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(logits: Tensor, tokens: Tensor, index: Tensor, mask: Tensor | None = None) -> Tensor:
    """Log-probabilities (B, R) of the response tokens; ``mask`` as given to :func:`response_logits`."""
    return gather_targets(torch.log_softmax(logits, dim=-1), tokens, index, mask)


def gather_targets(logprobs: Tensor, tokens: Tensor, index: Tensor, mask: Tensor | None = None) -> Tensor:
    """Each response token's entry of ``logprobs`` (B, R, V), or of (N, V) at the ``mask``'s real
    tokens, as (B, R) with zeros at the padding."""
    targets = tokens[:, 1:].gather(1, index)
    if mask is None:
        return logprobs.gather(-1, targets[..., None]).squeeze(-1)
    keep = mask.bool()
    return at_real_tokens(logprobs.gather(-1, targets[keep][:, None]).squeeze(-1), keep)


def at_real_tokens(values: Tensor, keep: Tensor) -> Tensor:
    """Values (N,) of the real tokens laid out (B, R) as ``keep``, zeros at the padding."""
    return torch.zeros(keep.shape, dtype=values.dtype, device=values.device).masked_scatter(keep, values)


def token_logprobs_and_entropy(
    logits: Tensor, tokens: Tensor, index: Tensor, entropy_grad: bool, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Log-probabilities of the response tokens and the policy's entropy at each, from one log-softmax;
    ``mask`` as given to :func:`response_logits` (both then zero at the padding).

    The vocabulary-wide passes are most of a small model's learner step; without an entropy
    bonus (``entropy_grad=False``) the entropy is only logged, so no gradient flows through it.
    """
    logprobs = torch.log_softmax(logits, dim=-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        full = logprobs if entropy_grad else logprobs.detach()
        entropy = -(full.exp() * full).sum(-1)
    if mask is not None:
        entropy = at_real_tokens(entropy, mask.bool())
    return gather_targets(logprobs, tokens, index, mask), entropy


def response_values(value_model: nn.Module, tokens: Tensor, index: Tensor) -> Tensor:
    return value_model.token_values(tokens)[:, :-1].gather(1, index)


@torch.no_grad()
def make_experience(
    rollouts: Sequence[Rollout],
    reference: nn.Module,
    value_model: nn.Module,
    scores: Tensor,
    pad_id: int,
    kl_coef: float,
    gamma: float,
    lam: float,
    ngram: int,
    version: int,
    temperature: float = 1.0,
    clock: PhaseClock | None = None,
) -> Experience:
    """Score ``rollouts`` with the networks on their device; the experience itself stays on the CPU.
    ``clock`` adds up the seconds of the reference's and the value network's forwards."""
    clock = clock or PhaseClock()
    tokens, index, mask = layout(rollouts, pad_id)
    old = torch.zeros_like(mask)
    for row, rollout in enumerate(rollouts):
        old[row, : len(rollout.logprobs)] = torch.tensor(rollout.logprobs)
    device = next(reference.parameters()).device
    on_device = tokens.to(device), index.to(device)
    with clock.phase("reference"):
        on_mask = mask.to(device)
        logits = response_logits(reference, *on_device, temperature, on_mask)
        ref = token_logprobs(logits, *on_device, on_mask).float().cpu()
    with clock.phase("values"):
        values = response_values(value_model, *on_device).float().cpu()
    ref, values = ref * mask, values * mask
    rewards = kl_shaped_rewards(scores.float(), old, ref, mask, kl_coef)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    responses = tokens[:, 1:].gather(1, index)
    return Experience(
        tokens=tokens,
        index=index,
        mask=mask,
        old_logprobs=old,
        ref_logprobs=ref,
        values=values,
        rewards=rewards,
        advantages=advantages,
        returns=returns,
        repeated=repeated_ngram_mask(responses, mask, ngram) * mask,
        scores=scores.float(),
        staleness=torch.tensor([version - r.version for r in rollouts], dtype=torch.float),
        workers=torch.tensor([r.worker for r in rollouts]),
    )
