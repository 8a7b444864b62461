"""Greedy BPE continued from a tokenizer's own symbols: the learning half of vocabulary extension.

A unit is a word as the base tokenizer leaves it (its tokens, in order), cut at morpheme
boundaries, with a count. Each step merges the most frequent adjacent pair that ``allowed``
accepts, in every unit, as an encoder applies a merge listed after all the base's merges.
Pair counts are kept up to date incrementally: a merge only revisits the units that hold
its pair, and a heap with lazily corrected counts finds the next best pair.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping


def _pairs(symbols: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(symbols))


def _merge_in(symbols: list[int], left: int, right: int, merged: int) -> list[int]:
    out: list[int] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == left and symbols[i + 1] == right:
            out.append(merged)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


class _Symbols:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = len(self.names)
            self.names.append(name)
        return self.ids[name]


def learn_merges(
    units: Mapping[tuple[str, ...], int],
    allowed: Callable[[str, str], bool],
    new_tokens: int,
    min_frequency: int = 2,
) -> list[tuple[str, str]]:
    """Merges, best first, until they make ``new_tokens`` distinct new strings or no allowed pair
    occurs ``min_frequency`` times. Ties go to the lexicographically smaller pair."""
    table = _Symbols()
    words = [[table.id(s) for s in unit] for unit in units]
    counts = list(units.values())
    pair_count: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for index, (symbols, count) in enumerate(zip(words, counts, strict=True)):
        for pair in _pairs(symbols):
            pair_count[pair] += count
            where[pair].add(index)
    verdicts: dict[tuple[int, int], bool] = {}

    def acceptable(pair: tuple[int, int]) -> bool:
        if pair not in verdicts:
            verdicts[pair] = allowed(table.names[pair[0]], table.names[pair[1]])
        return verdicts[pair]

    def entry(pair: tuple[int, int]) -> tuple[int, str, str, tuple[int, int]]:
        return (-pair_count[pair], table.names[pair[0]], table.names[pair[1]], pair)

    heap = [entry(p) for p, c in pair_count.items() if c >= min_frequency and acceptable(p)]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    merges_seen: set[tuple[str, str]] = set()
    made: set[str] = set()
    while heap and len(made) < new_tokens:
        negative, *_, pair = heapq.heappop(heap)
        count = pair_count.get(pair, 0)
        if count != -negative:
            if count >= min_frequency:
                heapq.heappush(heap, entry(pair))
            continue
        left, right = (table.names[s] for s in pair)
        merged = table.id(left + right)
        if (left, right) not in merges_seen:  # a later token can re-form an earlier pair
            merges.append((left, right))
            merges_seen.add((left, right))
            made.add(left + right)
        delta: dict[tuple[int, int], int] = defaultdict(int)
        for index in list(where[pair]):
            symbols, weight = words[index], counts[index]
            for old in _pairs(symbols):
                delta[old] -= weight
                where[old].discard(index)
            words[index] = symbols = _merge_in(symbols, *pair, merged)
            for new in _pairs(symbols):
                delta[new] += weight
                where[new].add(index)
        for changed, change in delta.items():
            pair_count[changed] += change
            if change > 0 and pair_count[changed] >= min_frequency and acceptable(changed):
                heapq.heappush(heap, entry(changed))
        pair_count.pop(pair, None)
    return merges
