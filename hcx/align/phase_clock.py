"""Where a PPO iteration's wall time goes, phase by phase (SPEC §5.3: PPO at about 4× SFT's cost).

The learner adds up the seconds of each phase of an iteration (waiting for rollouts, the
reference, value and reward forwards, each epoch's forwards, backwards and optimizer steps,
publishing the weights) and logs them in the iteration's record under ``phases``;
``benchmarks/ppo_vs_sft.py`` prints them beside the same shapes timed alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


class PhaseClock:
    """Seconds per named phase since the last :meth:`take`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def take(self) -> dict[str, float]:
        """The phases measured so far; the clock starts again from nothing."""
        seconds, self.seconds = self.seconds, {}
        return seconds
