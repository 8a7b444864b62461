"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

With ``n`` samples per problem of which ``c`` pass, pass@k = 1 - C(n-c, k) / C(n, k): the
chance that at least one of ``k`` samples drawn without replacement passes. The binomial
ratio is computed as a running product so it neither overflows nor loses precision for
large ``n`` (SPEC §6 code rows report pass@1).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def mean_pass_at_k(outcomes: Iterable[Sequence[bool]], k: int) -> float:
    """pass@k averaged over problems, each given as its samples' pass/fail outcomes."""
    scores = [pass_at_k(len(samples), sum(map(bool, samples)), k) for samples in outcomes]
    if not scores:
        raise ValueError("pass@k over zero problems")
    return sum(scores) / len(scores)
