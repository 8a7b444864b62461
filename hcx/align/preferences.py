"""Preference data for the reward model (SPEC §5.2, §7).

Two row shapes, both grouped per prompt:

- pairs ``{"prompt": str | [messages], "chosen": str, "rejected": str}`` (``../shared/data/preference``);
- ranked lists ``{"prompt", "responses": [str, ...], "scores": [float, ...]}`` (what the red-team
  tool exports), whose every ordered pair is a comparison.

A :class:`PreferenceGroup` keeps all responses of one prompt so that all its comparisons go
into the same optimisation step. Rows with identical chosen and rejected texts, empty
responses, or responses longer than the context are never trained on: they are skipped and
counted, or stop the run, by policy; nothing is truncated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hcx.align.conversations import check_messages
from hcx.align.losses import ranking_pairs
from hcx.records import Policy, ReadReport, Rejected, read_records
from hcx.tokenizer import Tokenizer


@dataclass(frozen=True)
class PreferenceGroup:
    """Token ids of each response rendered after the prompt, and the (better, worse) index pairs."""

    sequences: list[list[int]]
    pairs: list[tuple[int, int]]
    language: str = ""


def prompt_messages(prompt: Any) -> list[dict[str, str]]:
    """The prompt as a conversation ending with a user turn (a plain string is one user turn)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
        raise Rejected("bad prompt", "the prompt must be a string or messages ending with a user turn")
    check_messages([*messages, {"role": "assistant", "content": "x"}])
    return messages


def responses_and_scores(row: Mapping[str, Any]) -> tuple[list[str], list[float]]:
    if "responses" in row:
        responses, scores = row.get("responses"), row.get("scores")
        if not isinstance(responses, list) or not isinstance(scores, list) or len(responses) != len(scores):
            raise Rejected("bad ranking", "'responses' and 'scores' must be lists of equal length")
        return responses, [float(s) for s in scores]
    if "chosen" not in row or "rejected" not in row:
        raise Rejected("missing field", "a row needs 'chosen' and 'rejected', or 'responses' and 'scores'")
    if row["chosen"] == row["rejected"]:
        raise Rejected("chosen equals rejected")
    return [row["chosen"], row["rejected"]], [1.0, 0.0]


def tokenize_group(
    tokenizer: Tokenizer, row: Mapping[str, Any], max_len: int, language: str = ""
) -> PreferenceGroup:
    prompt = prompt_messages(row.get("prompt"))
    responses, scores = responses_and_scores(row)
    sequences = []
    for response in responses:
        if not isinstance(response, str) or not response.strip():
            raise Rejected("empty response")
        ids = tokenizer.encode_chat([*prompt, {"role": "assistant", "content": response}]).ids
        if len(ids) > max_len:
            raise Rejected("longer than the context", f"{len(ids)} > {max_len} tokens (never truncated)")
        sequences.append(ids)
    pairs = ranking_pairs(scores)
    if not pairs:
        raise Rejected("no comparison", "all scores are equal")
    return PreferenceGroup(sequences, pairs, language)


def read_preferences(
    path: str | Path,
    tokenizer: Tokenizer,
    max_len: int,
    policy: Policy = "skip",
    language: str = "",
    limit: int | None = None,
    report: ReadReport | None = None,
) -> list[PreferenceGroup]:
    """Every row's responses tokenized after its prompt, with its comparisons (one group per row)."""
    return read_records(
        path,
        lambda row: tokenize_group(tokenizer, row, max_len, language),
        policy,
        limit,
        report,
        "preference data",
    )


def comparisons(groups: Sequence[PreferenceGroup]) -> int:
    return sum(len(g.pairs) for g in groups)
