"""Knowledge upsampling and segment mixing by token count (SPEC §1).

Every deduplicated document has a token count ``t``, its source's knowledge weight ``w`` and
a fixed pseudo-random ``u`` in [0, 1) derived from its id. With a per-segment rate ``r``, the
document is written ``floor(r·w)`` times plus once more when ``u < frac(r·w)``: knowledge
sources repeat by their weight, and the whole segment is scaled up or down by ``r``.

The plan searches ``r`` per segment (the token total is monotone in ``r``) so that each
segment meets ``share × total`` to within one document, and the mix stage applies the same
rule independently in every task. Without ``total_tokens`` the total is the largest one no
segment needs upsampling for beyond its weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hcx.data.config import SEGMENTS


def doc_uniform(doc_id: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def copies(rate_times_weight: float, u: float) -> int:
    whole = int(rate_times_weight)
    return whole + (1 if u < rate_times_weight - whole else 0)


def _tokens_at(rate: float, tokens: np.ndarray, weights: np.ndarray, u: np.ndarray) -> float:
    x = rate * weights
    whole = np.floor(x)
    n = whole + (u < x - whole)
    return float((tokens * n).sum())


def solve_rate(target: float, tokens: np.ndarray, weights: np.ndarray, u: np.ndarray) -> float:
    """The rate whose token total is closest to ``target`` (bisection on a monotone step function)."""
    if target <= 0 or tokens.size == 0:
        return 0.0
    lo, hi = 0.0, 1.0
    while _tokens_at(hi, tokens, weights, u) < target:
        hi *= 2
        if hi > 1e6:
            raise ValueError("mix: target needs more than a million-fold upsampling")
    for _ in range(64):
        mid = (lo + hi) / 2
        if _tokens_at(mid, tokens, weights, u) < target:
            lo = mid
        else:
            hi = mid
    below, above = _tokens_at(lo, tokens, weights, u), _tokens_at(hi, tokens, weights, u)
    return lo if target - below <= above - target else hi


@dataclass
class MixPlan:
    shares: dict[str, float]
    available_tokens: dict[str, float]
    target_tokens: dict[str, float]
    planned_tokens: dict[str, float]
    rates: dict[str, float]
    seed: int

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> MixPlan:
        return cls(**json.loads(Path(path).read_text()))


def plan_mix(
    index: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    shares: dict[str, float],
    total_tokens: int | None,
    seed: int,
) -> MixPlan:
    """``index`` maps segment -> (tokens, weights, u) arrays of its deduplicated documents."""
    empty = np.zeros(0)
    arrays = {s: index.get(s, (empty, empty, empty)) for s in SEGMENTS}
    available = {s: float((t * w).sum()) for s, (t, w, _) in arrays.items()}
    active = [s for s in SEGMENTS if shares[s] > 0]
    missing = [s for s in active if available[s] == 0]
    if missing:
        raise ValueError(
            f"mix: segment(s) {missing} have a share but no documents left after filtering/dedup"
        )
    total = float(total_tokens) if total_tokens else min(available[s] / shares[s] for s in active)
    targets = {s: shares[s] * total for s in SEGMENTS}
    rates = {s: solve_rate(targets[s], *arrays[s]) for s in SEGMENTS}
    planned = {s: _tokens_at(rates[s], *arrays[s]) for s in SEGMENTS}
    return MixPlan(shares, available, targets, planned, rates, seed)
