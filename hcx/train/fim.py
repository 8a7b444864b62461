"""Fill-in-the-middle (SPEC §4; Bavarian et al. 2022, "Efficient Training of Language Models
to Fill in the Middle").

A document is cut into prefix P, middle M and suffix S and rearranged so the model learns
to write M after seeing both sides:

- PSM: ``<fim_prefix> P <fim_suffix> S <fim_middle> M``
- SPM: ``<fim_prefix> <fim_suffix> S <fim_middle> P M`` (the paper's SPM variant, in which
  P and M stay contiguous so the middle continues the prefix token for token).

The report takes P, M, S as the document's thirds; ``split="random"`` draws the two cut
points uniformly instead (the paper's choice). Cuts are on token boundaries, so
``fim_restore`` gives back the original tokens exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["thirds", "random"]


@dataclass(frozen=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int


def fim_split_points(n: int, split: Split, rng: np.random.Generator) -> tuple[int, int]:
    if split == "thirds":
        return n // 3, (2 * n) // 3
    a, b = sorted(rng.integers(0, n + 1, size=2).tolist())
    return a, b


def fim_permute(doc: np.ndarray, spm: bool, cuts: tuple[int, int], fim: FimTokens) -> np.ndarray:
    """Rearrange ``doc`` (token ids) around the cut points into PSM or SPM order."""
    prefix, middle, suffix = doc[: cuts[0]], doc[cuts[0] : cuts[1]], doc[cuts[1] :]
    if spm:
        parts = ([fim.prefix, fim.suffix], suffix, [fim.middle], prefix, middle)
    else:
        parts = ([fim.prefix], prefix, [fim.suffix], suffix, [fim.middle], middle)
    return np.concatenate([np.asarray(p, dtype=doc.dtype) for p in parts])


def fim_restore(seq: np.ndarray, fim: FimTokens) -> np.ndarray:
    """The original document of a PSM or SPM sequence made by :func:`fim_permute`."""
    seq = np.asarray(seq)
    if len(seq) < 3 or seq[0] != fim.prefix:
        raise ValueError("not a FIM sequence: it must start with the FIM prefix token")
    middle_at = int(np.flatnonzero(seq == fim.middle)[0])
    if seq[1] == fim.suffix:  # SPM: <pre><suf> S <mid> P M, P and M joined
        suffix, prefix_and_middle = seq[2:middle_at], seq[middle_at + 1 :]
        return np.concatenate([prefix_and_middle, suffix])
    suffix_at = int(np.flatnonzero(seq == fim.suffix)[0])
    prefix, suffix, middle = seq[1:suffix_at], seq[suffix_at + 1 : middle_at], seq[middle_at + 1 :]
    return np.concatenate([prefix, middle, suffix])
