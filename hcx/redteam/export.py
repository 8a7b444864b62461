"""Red-team data as training files, in exactly the formats ``hcx rm`` and ``hcx sft`` read (SPEC §7).

- ``rm_ranking.jsonl``: per attack prompt ``{"prompt": [messages], "responses", "scores"}``,
  scores being overall quality; the written answer, when there is one, joins the ranking
  with the top score (it is the perfect answer none of the models gave).
- ``rm_pairs.jsonl``: the same comparisons as ``{"prompt", "chosen", "rejected"}`` rows, one
  per pair with strictly different scores (train on one of the two files, not both).
- ``sft.jsonl``: ``{"messages": [...]}`` ending with the written answer.

Every row is checked with the readers' own validators (:mod:`hcx.align.preferences`,
:mod:`hcx.align.conversations`) before it is written; a turn that cannot make a row (all
responses empty, all scores tied, ...) is counted in ``manifest.json`` with the reason.
Each row also carries ``meta`` (session, turn, topic, method), which the readers ignore.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from hcx.align.conversations import check_messages
from hcx.align.losses import ranking_pairs
from hcx.align.preferences import prompt_messages, responses_and_scores
from hcx.records import Rejected
from hcx.redteam.attacks import conversation_until, scored
from hcx.redteam.db import AttackSession, Response, Turn, User

FILES = ("rm_ranking.jsonl", "rm_pairs.jsonl", "sft.jsonl")


@dataclass
class Export:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {name: [] for name in FILES})
    skipped: Counter = field(default_factory=Counter)

    def manifest(self) -> dict[str, Any]:
        return {
            "rows": {name: len(rows) for name, rows in self.rows.items()},
            "skipped_turns": dict(self.skipped),
        }


def _meta(turn: Turn) -> dict[str, Any]:
    session = turn.session
    return {"session": session.id, "turn": turn.position, "topic": session.topic, "method": session.method}


def ranking_row(turn: Turn, score_max: int) -> dict[str, Any]:
    """The turn's scored, non-empty responses (and written answer) ranked by overall quality."""
    best_by_text: dict[str, float] = {}
    responses: list[Response] = scored(turn)
    ranked = [(r.text, float(r.score.quality)) for r in responses if r.text.strip()]
    if turn.answer is not None:
        ranked.append((turn.answer.text, float(score_max)))
    for text, score in ranked:
        best_by_text[text] = max(score, best_by_text.get(text, score))
    row = {
        "prompt": conversation_until(turn),
        "responses": list(best_by_text),
        "scores": list(best_by_text.values()),
        "meta": _meta(turn),
    }
    prompt_messages(row["prompt"])
    responses_and_scores(row)
    if len(row["responses"]) < 2:
        raise Rejected("fewer than two non-empty responses")
    if not ranking_pairs(row["scores"]):
        raise Rejected("all scores are equal")
    return row


def sft_row(turn: Turn) -> dict[str, Any]:
    if turn.answer is None:
        raise Rejected("no written answer")
    messages = [*conversation_until(turn), {"role": "assistant", "content": turn.answer.text}]
    return {"messages": check_messages(messages), "meta": _meta(turn)}


def build_export(sessions: Iterable[AttackSession], score_max: int) -> Export:
    export = Export()
    for session in sessions:
        for turn in session.turns:
            try:
                ranking = ranking_row(turn, score_max)
            except Rejected as why:
                export.skipped[f"ranking: {why.kind}"] += 1
            else:
                export.rows["rm_ranking.jsonl"].append(ranking)
                scores, texts = ranking["scores"], ranking["responses"]
                export.rows["rm_pairs.jsonl"].extend(
                    {
                        "prompt": ranking["prompt"],
                        "chosen": texts[i],
                        "rejected": texts[j],
                        "meta": ranking["meta"],
                    }
                    for i, j in ranking_pairs(scores)
                )
            try:
                export.rows["sft.jsonl"].append(sft_row(turn))
            except Rejected as why:
                export.skipped[f"sft: {why.kind}"] += 1
    return export


def visible_sessions(db: Session, user: User | None) -> list[AttackSession]:
    """Every session for an admin (or ``None``: the command line), else only the user's own."""
    query = (
        select(AttackSession)
        .options(
            selectinload(AttackSession.turns).selectinload(Turn.responses).selectinload(Response.score),
            selectinload(AttackSession.turns).selectinload(Turn.answer),
        )
        .order_by(AttackSession.id)
    )
    if user is not None and not user.is_admin:
        query = query.where(AttackSession.user_id == user.id)
    return list(db.scalars(query))


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_export(export: Export, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in export.rows.items():
        paths[name] = out / name
        paths[name].write_text(jsonl(rows), encoding="utf-8")
    (out / "manifest.json").write_text(json.dumps(export.manifest(), indent=1, ensure_ascii=False))
    return paths
