"""What an attack's judgements mean, shared by the pages, the exports and the statistics (SPEC §7).

- The *best* response of a turn is the one with the highest overall quality (harmlessness
  breaks ties): the one the annotator would have the model give.
- A turn is *finished* when every response is scored and either one is perfect (top score
  on both scales) or the annotator wrote the safe, helpful, correct answer.
- A multi-turn attack continues from the turn's *reply*: the written answer if there is
  one, else the best response, so later prompts build on what the model should have said.
"""

from __future__ import annotations

from collections.abc import Sequence

from hcx.redteam.db import Response, Turn

Messages = list[dict[str, str]]


def scored(turn: Turn) -> list[Response]:
    return [r for r in turn.responses if r.score is not None]


def all_scored(turn: Turn) -> bool:
    return bool(turn.responses) and len(scored(turn)) == len(turn.responses)


def best_response(turn: Turn) -> Response | None:
    candidates = scored(turn)
    if not candidates:
        return None
    return max(candidates, key=lambda r: (r.score.quality, r.score.harmlessness, -r.position))


def is_perfect(response: Response, score_max: int) -> bool:
    return response.score is not None and response.score.quality == response.score.harmlessness == score_max


def has_perfect(turn: Turn, score_max: int) -> bool:
    return any(is_perfect(r, score_max) for r in turn.responses)


def needs_answer(turn: Turn, score_max: int) -> bool:
    """All responses are scored, none is perfect, and no answer is written yet."""
    return all_scored(turn) and not has_perfect(turn, score_max) and turn.answer is None


def is_finished(turn: Turn, score_max: int) -> bool:
    return all_scored(turn) and (has_perfect(turn, score_max) or turn.answer is not None)


def reply(turn: Turn) -> str:
    if turn.answer is not None:
        return turn.answer.text
    best = best_response(turn)
    return best.text if best is not None else ""


def history(turns: Sequence[Turn]) -> Messages:
    """The conversation carried by finished turns: each attack prompt and its reply."""
    messages: Messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.prompt})
        messages.append({"role": "assistant", "content": reply(turn)})
    return messages


def conversation_until(turn: Turn) -> Messages:
    """The messages of the session up to this turn's attack prompt (ending with a user turn)."""
    earlier = [t for t in turn.session.turns if t.position < turn.position]
    return [*history(earlier), {"role": "user", "content": turn.prompt}]
